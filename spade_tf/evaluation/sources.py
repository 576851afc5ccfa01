"""The model to synthesise with: a training run folder, an export or an NVlabs checkpoint, behind
the export contract's signatures.

Whatever its source, a `Model` offers the signatures an export has (`with_seed`, and `with_z` /
`encode_style` for VAE models), called with keyword tensors and returning dicts of tensors. Keras
networks (a run folder, an NVlabs checkpoint) are wrapped in the export's own `ExportModule`, so
they compute exactly as their export would: spectral norm folded into the kernels, graph mode
without XLA, in `export.precision`, seeds drawn as `with_seed` draws them.
"""

import dataclasses
import pathlib
import typing

import tensorflow as tf

from spade_tf.config import IMPLEMENTATION_KEYS, load_config, parse_overrides, replace
from spade_tf.export import ASSETS_EXTRA, writer
from spade_tf.export.fold import inference_networks
from spade_tf.export.module import ExportModule
from spade_tf.io.nvlabs import config_from_opt, import_checkpoint
from spade_tf.training.checkpoints import restore_networks

LABEL_MAP_KEYS = ("label_nc", "contain_dontcare_label", "no_instance")  # a dataset must share these with the model


@dataclasses.dataclass
class Model:
    """A generator behind the export contract's signatures, called with keyword tensors."""

    cfg: typing.Any
    signatures: dict
    source: str
    owner: typing.Any = None  # what the signatures' variables belong to, kept alive

    @property
    def use_vae(self) -> bool:
        return bool(self.cfg.model.use_vae)

    @property
    def use_instance(self) -> bool:
        return not self.cfg.data.no_instance


def _keyword_call(function):
    """A tf.function with a named input signature, called with keyword tensors as a loaded signature is."""
    names = [spec.name for spec in function.input_signature]
    return lambda **inputs: function(*(inputs[name] for name in names))


def keras_model(cfg, generator, encoder=None, source="keras") -> Model:
    """A Model from trained Keras networks, through the export's `ExportModule` and its signatures."""
    module = ExportModule(cfg, *inference_networks(cfg, generator, encoder))
    signatures = {name: _keyword_call(function) for name, function in module.functions().items()}
    return Model(cfg, signatures, source, module)


def load_run(run_dir, checkpoint=None, overrides=()) -> Model:
    """A training run folder's networks (`spade_tf.training.checkpoints.restore_networks`), with its
    config.yaml plus `section.field=value` overrides."""
    cfg, generator, encoder = restore_networks(run_dir, checkpoint, overrides=overrides)
    return keras_model(cfg, generator, encoder, f"run {run_dir}")


def load_nvlabs(nvlabs_dir, opt=None, which_epoch="latest", config=None, overrides=()) -> Model:
    """An NVlabs/SPADE checkpoint folder (`<which_epoch>_net_G.pth`, `_E` for VAE models) and its opt.txt."""
    opt = pathlib.Path(opt or pathlib.Path(nvlabs_dir) / "opt.txt")
    if not opt.is_file():
        raise FileNotFoundError(f"{opt} not found: pass the reference's opt.txt with --opt")
    cfg = config_from_opt(opt, load_config(config))
    cfg = replace(cfg, parse_overrides(overrides), "command line")  # after opt.txt, whose dataroot is the training machine's
    generator, _, encoder = import_checkpoint(nvlabs_dir, cfg, which_epoch)
    if cfg.model.use_vae and encoder is None:
        raise FileNotFoundError(f"{opt} describes a VAE model but {nvlabs_dir} has no {which_epoch}_net_E.pth")
    return keras_model(cfg, generator, encoder, f"NVlabs checkpoint {nvlabs_dir}")


def load_saved_model(path, overrides=()) -> Model:
    """An export (the contract of `spade_tf.export`): a version folder, or a model base path (its highest version).

    Its config.yaml plus overrides; the networks and precision are the export's, so overrides of
    model.* and export.* are refused.
    """
    path = pathlib.Path(path)
    if not (path / "saved_model.pb").is_file():
        versions = writer.versions(path)
        if not versions:
            raise FileNotFoundError(
                f"{path} is neither a SavedModel version folder nor a model base path with integer versions"
            )
        path = path / str(versions[-1])
    config = path / ASSETS_EXTRA / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found: {path} was not written by spade-tf's export")
    own = load_config(str(config))
    cfg = replace(own, parse_overrides(overrides), "command line")
    fixed = [f"{section}.{name}={value!r}" for section in ("model", "export")
             for name, value in dataclasses.asdict(getattr(cfg, section)).items()
             if value != getattr(getattr(own, section), name) and f"{section}.{name}" not in IMPLEMENTATION_KEYS]
    cfg = replace(cfg, {"model": {"spade_impl": own.model.spade_impl}})  # the export's graph computes as it was written
    if fixed:
        raise ValueError(
            f"{', '.join(fixed)}: an export's networks and precision are fixed when it is written; "
            "model.* and export.* overrides apply to --run_dir and --nvlabs_dir"
        )
    loaded = tf.saved_model.load(str(path))
    return Model(cfg, dict(loaded.signatures), f"SavedModel {path}", loaded)


def with_data_config(model: Model, preset, overrides=()) -> Model:
    """The model reading layouts with `preset`'s data settings (+ overrides), at its own label set and size."""
    data = load_config(preset, overrides).data
    own = model.cfg.data
    differ = [f"{k}: {getattr(data, k)!r} in {preset}, {getattr(own, k)!r} in the model"
              for k in LABEL_MAP_KEYS if getattr(data, k) != getattr(own, k)]
    if differ:
        raise ValueError(f"--config {preset} describes another label set than the model's ({'; '.join(differ)})")
    cfg = replace(model.cfg, data=data, where=f"--config {preset}")
    cfg = replace(cfg, {"data": {"crop_size": own.crop_size, "aspect_ratio": own.aspect_ratio}})
    return dataclasses.replace(model, cfg=cfg)
