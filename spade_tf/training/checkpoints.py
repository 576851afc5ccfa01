"""The layout of a training run's folder, shared by the trainer, the importer and the exporter.

`<train.checkpoints_dir>/<name>/` holds `config.yaml` (the run's full config) and
`tf.train.CheckpointManager` checkpoints (`ckpt-<step>.index/.data-*`, `checkpoint`) of a
`tf.train.Checkpoint` whose attributes are `generator`, `discriminator`, `encoder` (VAE only),
`ema_generator` (when train.ema_decay > 0), `g_optimizer`, `d_optimizer` and `step`. The
manager writes a checkpoint to temporary files and renames them into place, so a run killed at
any moment leaves the previous checkpoint intact. The trainer also writes `logs/` (TensorBoard)
and `samples/step_<n>.png` there.
"""

import pathlib

import tensorflow as tf

from spade_tf.config import IMPLEMENTATION_KEYS, Config, load_config

CONFIG_FILE = "config.yaml"
LOGS_DIR = "logs"
SAMPLES_DIR = "samples"
# Settings a checkpoint's weights depend on: resuming with other values cannot restore it.
ARCHITECTURE_KEYS = ("data.label_nc", "data.contain_dontcare_label", "data.no_instance", "data.crop_size",
                     "data.aspect_ratio")


def run_dir(cfg: Config) -> pathlib.Path:
    return pathlib.Path(cfg.train.checkpoints_dir) / cfg.name


def load_run_config(directory, overrides=()) -> Config:
    """The config saved in a run folder (plus overrides)."""
    path = pathlib.Path(directory) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {directory} is not a spade-tf run folder (no {CONFIG_FILE})")
    return load_config(str(path), overrides)


def latest_checkpoint(directory) -> str:
    path = tf.train.latest_checkpoint(str(directory))
    if path is None:
        raise FileNotFoundError(f"no checkpoint in {directory} (expected ckpt-<step> files written by train.py)")
    return path


def has_checkpoint(directory) -> bool:
    return tf.train.latest_checkpoint(str(directory)) is not None


def fresh_run_name(cfg: Config) -> str:
    """`cfg.name` if its folder holds no checkpoint, else the first `<name>-<k>` (k >= 2) with no folder."""
    if not has_checkpoint(run_dir(cfg)):
        return cfg.name
    root, k = pathlib.Path(cfg.train.checkpoints_dir), 2
    while (root / f"{cfg.name}-{k}").exists():
        k += 1
    return f"{cfg.name}-{k}"


def check_resumable(directory, cfg: Config) -> None:
    """Raises ValueError when `cfg` builds networks other than the ones saved in the run folder."""
    saved = load_run_config(directory)

    def flat(c):
        values = {f"model.{k}": v for k, v in c.to_dict()["model"].items()}
        values.update({k: getattr(c.data, k.split(".")[1]) for k in ARCHITECTURE_KEYS})
        return values

    old, new = flat(saved), flat(cfg)
    changed = [f"{k}: {old[k]!r} in the run, {new[k]!r} now" for k in old
               if old[k] != new[k] and k not in IMPLEMENTATION_KEYS]
    if changed:
        raise ValueError(
            f"cannot resume {directory}: its networks were built with other settings ({'; '.join(changed)}). "
            "Keep the run's settings, or start a new run with --fresh (or another name=...)"
        )


def save_imported(directory, cfg: Config, generator, discriminator=None, encoder=None) -> str:
    """Writes imported networks as step 0 of a run folder, so train.py can fine-tune them and export.py export them."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg.to_yaml(directory / CONFIG_FILE)
    parts = {"generator": generator, "step": tf.Variable(0, dtype=tf.int64)}
    if discriminator is not None:
        parts["discriminator"] = discriminator
    if encoder is not None:
        parts["encoder"] = encoder
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(**parts), str(directory), max_to_keep=None)
    return manager.save(checkpoint_number=0)


def restore_networks(directory, checkpoint=None, use_ema=True, overrides=()):
    """(cfg, generator, encoder or None) from a run folder, for export, synthesis and evaluation.

    Uses the moving-average generator when the run kept one and `use_ema`.
    """
    from spade_tf.models import build_encoder, build_generator

    cfg = load_run_config(directory, overrides)
    path = checkpoint or latest_checkpoint(directory)
    generator, encoder = build_generator(cfg), build_encoder(cfg)
    reader = tf.train.load_checkpoint(path)
    has_ema = any(k.startswith("ema_generator/") for k in reader.get_variable_to_shape_map())
    parts = {"ema_generator" if (use_ema and has_ema) else "generator": generator}
    if encoder is not None:
        parts["encoder"] = encoder
    tf.train.Checkpoint(**parts).restore(path).expect_partial().assert_existing_objects_matched()
    return cfg, generator, encoder
