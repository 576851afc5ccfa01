"""Import NVlabs/SPADE checkpoints (`latest_net_G.pth`, `_D`, `_E`, `opt.txt`) without PyTorch.

The reference's state-dict keys name its modules (`head_0.norm_0.mlp_shared.0.weight`,
`discriminator_1.model2.0.0.weight_orig`, `layer3.0.weight_u`, ...); `_pairs_*` below pair each
module prefix with the Keras layer that plays its role, and `load_torch_weights` copies the
tensors across in our layouts (conv [out, in, kh, kw] -> [kh, kw, in, out], linear [out, in] ->
[in, out], spectral norm's weight_orig / u / v as our kernel / u / v). Every key and every weight
must be used exactly once with the right shape; otherwise the error lists what differs.

    python -m spade_tf.io.nvlabs --checkpoint_dir checkpoints/coco_pretrained --out checkpoints/coco
    python train.py --config checkpoints/coco/config.yaml data.dataroot=datasets/coco_stuff   # fine-tunes it

The run folder `--out` holds config.yaml (the reference's options, named after the folder) and
ckpt-0 (G, and D and E when their files exist); training resumes it at step 0 with fresh optimizers.
"""

import argparse
import pathlib
import re
import sys

import keras
import numpy as np

from spade_tf.config import CHOICES, Config, replace
from spade_tf.io.torch_pth import CheckpointError, load_state_dict
from spade_tf.layers import SpectralNorm, SPADEResBlock, parse_norm


class ImportMismatch(CheckpointError):
    """The checkpoint's keys or shapes do not fit the model built from the config."""


# --- which torch module prefix is which Keras layer --------------------------------------------


def _pairs_generator(g):
    if not any(isinstance(layer, SPADEResBlock) for layer in g.layers):
        raise ValueError("only the SPADE generator (netG spade) can be imported from NVlabs checkpoints")
    yield "fc", g.get_layer("fc")
    for block in g.layers:
        if not isinstance(block, SPADEResBlock):
            continue
        for conv in ("conv_0", "conv_1", "conv_s"):
            if hasattr(block, conv):
                yield f"{block.name}.{conv}", getattr(block, conv)
        for norm in ("norm_0", "norm_1", "norm_s"):
            if hasattr(block, norm):
                spade = getattr(block, norm)
                yield f"{block.name}.{norm}.param_free_norm", spade.param_free_norm
                yield f"{block.name}.{norm}.mlp_shared.0", spade.mlp_shared
                yield f"{block.name}.{norm}.mlp_gamma", spade.mlp_gamma
                yield f"{block.name}.{norm}.mlp_beta", spade.mlp_beta
    yield "conv_img", g.get_layer("conv_img")


def _conv_and_norm(model, torch_prefix, name):
    """A `get_nonspade_norm_layer` group: `<p>.0` conv and `<p>.1` norm, or just `<p>` without norm."""
    names = {layer.name: layer for layer in model.layers}
    conv = names.get(f"{name}_sn") or names[f"{name}_conv"]
    norm = names.get(f"{name}_norm")
    if norm is None:
        yield torch_prefix, conv
    else:
        yield f"{torch_prefix}.0", conv
        if norm.weights:
            yield f"{torch_prefix}.1", norm


def _pairs_nlayer(d, prefix):
    for j in range(d.n_layers_D + 1):
        plain = j in (0, d.n_layers_D)  # first and last conv: no norm, wrapped in nn.Sequential
        if plain:
            yield f"{prefix}model{j}.0", d.get_layer(f"model{j}_conv")
        else:
            yield from _conv_and_norm(d, f"{prefix}model{j}.0", f"model{j}")


def _pairs_discriminator(d):
    if hasattr(d, "num_D"):
        for i in range(d.num_D):
            yield from _pairs_nlayer(d.get_layer(f"discriminator_{i}"), f"discriminator_{i}.")
    else:
        yield from _pairs_nlayer(d, "")


def _pairs_encoder(e):
    for k in range(1, 7):
        yield from _conv_and_norm(e, f"layer{k}", f"layer{k}")
    yield "fc_mu", e.get_layer("fc_mu")
    yield "fc_var", e.get_layer("fc_var")


# --- copying tensors ---------------------------------------------------------------------------


def _targets(layer):
    """torch parameter name -> (Keras variable, converter) for one layer."""
    if isinstance(layer, SpectralNorm):
        inner = dict(_targets(layer.layer))
        out = {"weight_orig": inner.pop("weight"), "weight_u": (layer.u, None), "weight_v": (layer.v, None)}
        return {**out, **inner}.items()
    if isinstance(layer, keras.layers.Dense):
        t = {"weight": (layer.kernel, lambda w: w.T)}
    elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
        t = {"weight": (layer.kernel, lambda w: w.transpose(2, 3, 1, 0))}
    elif isinstance(layer, keras.layers.BatchNormalization):
        t = {"running_mean": (layer.moving_mean, None), "running_var": (layer.moving_variance, None)}
        if layer.scale:
            t["weight"] = (layer.gamma, None)
        if layer.center:
            t["bias"] = (layer.beta, None)
        return t.items()
    else:
        raise TypeError(f"no torch counterpart for layer {layer.name} ({type(layer).__name__})")
    if layer.use_bias:
        t["bias"] = (layer.bias, None)
    return t.items()


def load_torch_weights(model, state_dict, pairs, source="checkpoint"):
    """Copies `state_dict` into `model` through `pairs`; raises ImportMismatch listing every difference."""
    state = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    assignments, missing, shapes = [], [], []
    for prefix, layer in pairs(model):
        for pname, (variable, convert) in _targets(layer):
            key = f"{prefix}.{pname}"
            if key not in state:
                missing.append(f"{key} {tuple(variable.shape)}")
                continue
            raw = state.pop(key)
            try:
                value = convert(raw) if convert else raw
            except ValueError:  # a transpose of an array of another rank
                value = raw
            if tuple(value.shape) != tuple(variable.shape):
                shapes.append(f"{key}: checkpoint {tuple(raw.shape)} vs model {tuple(variable.shape)}")
                continue
            assignments.append((variable, value))
    if missing or state or shapes:
        lines = [f"{source} does not fit the model built from this config (was it saved for another configuration?)"]
        for title, items in (("missing in the checkpoint", missing), ("unexpected in the checkpoint", sorted(state)),
                             ("shape mismatches (check label_nc, contain_dontcare_label, no_instance, ngf, ndf, "
                              "num_upsampling_layers, use_vae, norm strings)", shapes)):
            if items:
                lines.append(f"{title} ({len(items)}): " + "; ".join(items[:8]) + (" ..." if len(items) > 8 else ""))
        raise ImportMismatch("\n  ".join(lines))
    for variable, value in assignments:
        variable.assign(np.asarray(value, dtype=variable.dtype))
    return model


def load_nvlabs_generator(g, path):
    return load_torch_weights(g, load_state_dict(path), _pairs_generator, str(path))


def load_nvlabs_discriminator(d, path):
    return load_torch_weights(d, load_state_dict(path), _pairs_discriminator, str(path))


def load_nvlabs_encoder(e, path):
    return load_torch_weights(e, load_state_dict(path), _pairs_encoder, str(path))


# --- opt.txt ------------------------------------------------------------------------------------

_OPT_LINE = re.compile(r"^\s*([A-Za-z_0-9]+):\s*(.*?)\s*(\[default: .*\])?\s*$")

# reference option -> (section, field); the names are the same unless listed here
_RENAMED = {"batchSize": ("train", "batch_size")}
_SECTION_OF = {}
for _section in ("data", "model", "train"):
    for _f in getattr(Config(), _section).__dataclass_fields__:
        _SECTION_OF[_f] = _section


def config_from_opt(opt_path, base: Config = None) -> Config:
    """Builds a Config from the reference's `opt.txt` (options it does not share are ignored)."""
    cfg = base or Config()
    text = pathlib.Path(opt_path).read_text()
    values = {}
    for line in text.splitlines():
        m = _OPT_LINE.match(line)
        if not m:
            continue
        key, raw = m.group(1), m.group(2)
        section, field = _RENAMED.get(key, (_SECTION_OF.get(key), key))
        if section is None:
            if key == "name":
                values["name"] = raw
            continue
        current = getattr(getattr(cfg, section), field)
        try:
            if isinstance(current, bool):
                value = {"True": True, "False": False}[raw]
            elif isinstance(current, int):
                value = int(raw)
            elif isinstance(current, float):
                value = float(raw)
            elif isinstance(current, tuple):
                continue
            else:
                value = raw
        except (KeyError, ValueError):
            raise ValueError(f"{opt_path}: option {key} has value {raw!r}, expected a {type(current).__name__}")
        values[f"{section}.{field}"] = value
    if not values.keys() - {"name"}:
        raise ValueError(f"{opt_path} has no reference options (expected lines like 'label_nc: 182')")
    if values.get("data.dataset_mode", cfg.data.dataset_mode) not in CHOICES["data.dataset_mode"]:
        values["data.dataset_mode"] = "custom"
    return replace(cfg, values, str(opt_path))


def import_checkpoint(checkpoint_dir, cfg: Config, which_epoch="latest"):
    """Builds G (and D, E when their files exist) from `cfg` and loads `<which_epoch>_net_*.pth`."""
    from spade_tf.models import build_discriminator, build_encoder, build_generator

    root = pathlib.Path(checkpoint_dir)
    g_path = root / f"{which_epoch}_net_G.pth"
    if not g_path.exists():
        raise FileNotFoundError(f"{g_path} not found: expected the reference's checkpoint files in {root}")
    g = load_nvlabs_generator(build_generator(cfg), g_path)
    d = e = None
    if (root / f"{which_epoch}_net_D.pth").exists():
        d = load_nvlabs_discriminator(build_discriminator(cfg), root / f"{which_epoch}_net_D.pth")
    if cfg.model.use_vae and (root / f"{which_epoch}_net_E.pth").exists():
        e = load_nvlabs_encoder(build_encoder(cfg), root / f"{which_epoch}_net_E.pth")
    return g, d, e


def main(argv=None):
    from spade_tf.config import ConfigError, add_config_arguments, config_from_args
    from spade_tf.training.checkpoints import save_imported

    parser = argparse.ArgumentParser(description="Import an NVlabs/SPADE checkpoint into a spade-tf checkpoint.")
    parser.add_argument("--checkpoint_dir", required=True, help="folder with latest_net_G.pth (and _D, _E, opt.txt)")
    parser.add_argument("--which_epoch", default="latest")
    parser.add_argument("--opt", default=None, help="the reference's opt.txt (default: <checkpoint_dir>/opt.txt)")
    parser.add_argument("--out", required=True,
                        help="run folder to write; train.py --config <out>/config.yaml fine-tunes it")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = run_config(config_from_opt(find_opt(args.checkpoint_dir, args.opt), config_from_args(args)), args.out)
        g, d, e = import_checkpoint(args.checkpoint_dir, cfg, args.which_epoch)
    except (CheckpointError, ConfigError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    path = save_imported(args.out, cfg, g, d, e)
    print(f"wrote {path} (networks: {', '.join(n for n, m in (('G', g), ('D', d), ('E', e)) if m is not None)}); "
          f"fine-tune it with: python train.py --config {pathlib.Path(args.out) / 'config.yaml'} "
          "data.dataroot=<your dataset>")
    return 0


def find_opt(checkpoint_dir, opt=None) -> pathlib.Path:
    """The reference's options: `opt` if given, else `<checkpoint_dir>/opt.txt`; FileNotFoundError naming it."""
    if opt is not None:
        if not pathlib.Path(opt).is_file():
            raise FileNotFoundError(f"--opt {opt}: no such file (expected the reference's opt.txt)")
        return pathlib.Path(opt)
    path = pathlib.Path(checkpoint_dir) / "opt.txt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the reference writes its options there beside the .pth files, and the networks "
            "cannot be built without them (label_nc, ngf, norm strings, ...). Give the file with --opt FILE")
    return path


def run_config(cfg: Config, out) -> Config:
    """`cfg` naming the run folder `out` itself (name = its last part, train.checkpoints_dir = its parent),
    so that train.py with out/config.yaml resumes the imported checkpoint there."""
    out = pathlib.Path(out)
    return replace(cfg, {"name": out.name, "train": {"checkpoints_dir": str(out.parent)}}, "--out")


if __name__ == "__main__":
    sys.exit(main())
