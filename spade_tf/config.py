"""One typed configuration for training, export, evaluation and serving.

Field names follow the reference's options (NVlabs/SPADE `options/*.py`) so that its `opt.txt`
maps onto them one to one. A config is built from the defaults below, then a preset
(`configs/<name>.yaml`, or any YAML file), then `section.field=value` overrides from the command
line, in that order; the final config is saved beside every checkpoint and export.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import pathlib
import typing

import yaml

from spade_tf.shared import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "configs"


@dataclasses.dataclass
class DataConfig:
    dataset_mode: str = "synthetic"  # synthetic | cityscapes | ade20k | coco | facades | custom
    dataroot: str = ""
    label_dir: str = ""  # custom mode
    image_dir: str = ""  # custom mode
    instance_dir: str = ""  # custom mode; empty = no instance maps
    label_nc: int = 13  # number of classes, not counting the unknown label
    contain_dontcare_label: bool = False  # label 255 becomes index label_nc ("unknown")
    no_instance: bool = True  # True: no instance edge channel
    class_names: typing.List[str] = dataclasses.field(default_factory=list)  # empty: the preset's
    preprocess_mode: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    aspect_ratio: float = 1.0  # width / height
    no_flip: bool = False
    no_pairing_check: bool = False
    max_dataset_size: int = 0  # 0 = all
    on_bad_file: str = "stop"  # stop | skip
    synthetic_size: int = 1000  # samples per epoch of the built-in dataset
    shuffle_buffer: int = 256
    seed: int = 0


@dataclasses.dataclass
class ModelConfig:
    netG: str = "spade"  # spade | pix2pixhd
    ngf: int = 64
    num_upsampling_layers: str = "normal"  # normal | more | most
    norm_G: str = "spectralspadesyncbatch3x3"
    use_vae: bool = False
    z_dim: int = 256
    netD: str = "multiscale"  # multiscale | n_layer
    ndf: int = 64
    n_layers_D: int = 4
    num_D: int = 2
    norm_D: str = "spectralinstance"
    norm_E: str = "spectralinstance"
    init_type: str = "xavier"  # xavier | xavier_uniform | normal | kaiming | orthogonal | none
    init_variance: float = 0.02
    resnet_n_downsample: int = 4  # pix2pixhd only
    resnet_n_blocks: int = 9
    resnet_kernel_size: int = 3
    resnet_initial_kernel_size: int = 7


@dataclasses.dataclass
class TrainConfig:
    checkpoints_dir: str = "checkpoints"
    batch_size: int = 1  # global batch, over all replicas and workers
    niter: int = 50  # epochs at the initial learning rate
    niter_decay: int = 0  # epochs of linear decay to zero
    steps_per_epoch: int = 0  # 0: dataset size // batch_size
    max_steps: int = 0  # 0: (niter + niter_decay) * steps_per_epoch
    lr: float = 0.0002
    beta1: float = 0.0
    beta2: float = 0.9
    no_TTUR: bool = False
    D_steps_per_G: int = 1
    gan_mode: str = "hinge"  # hinge | ls | original | w
    lambda_feat: float = 10.0
    lambda_vgg: float = 10.0
    lambda_kld: float = 0.05
    no_ganFeat_loss: bool = False
    no_vgg_loss: bool = False
    vgg_weights: str = ""  # torchvision vgg19-*.pth (read without torch), "keras-imagenet", or "random" (tests)
    distribute: str = "auto"  # auto | none | mirrored | multiworker
    jit_compile: str = "auto"  # auto | on | off
    mixed_precision: str = "off"  # off | on (mixed_float16 on GPU, mixed_bfloat16 on CPU)
    ema_decay: float = 0.0  # 0: no moving average of the generator
    save_every_steps: int = 500
    keep_checkpoints: int = 3
    keep_every_n_hours: float = 0.0
    log_every_steps: int = 10
    sample_every_steps: int = 200
    seed: int = 0


@dataclasses.dataclass
class ExportConfig:
    export_dir: str = "exports/spade"  # TF Serving's model base path
    model_name: str = "spade"
    version: int = 0  # 0: the next free version
    precision: str = "float32"  # float32 | bfloat16
    warmup_requests: int = 2


@dataclasses.dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8500
    max_batch_size: int = 8
    batch_timeout_micros: int = 2000
    max_pixels: int = 4096 * 4096
    poll_wait_seconds: float = 1.0


@dataclasses.dataclass
class Config:
    name: str = "spade"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    serve: ServeConfig = dataclasses.field(default_factory=ServeConfig)

    # --- derived quantities --------------------------------------------------------------
    @property
    def semantic_nc(self) -> int:
        """Channels of the network's semantic input: one-hot labels (+unknown) (+edge map)."""
        d = self.data
        return d.label_nc + int(d.contain_dontcare_label) + int(not d.no_instance)

    @property
    def image_size(self) -> typing.Tuple[int, int]:
        """(H, W) the generator produces at the configured crop size, as the reference computes it."""
        from spade_tf.models.generator import image_size

        return image_size(self.data.crop_size, self.data.aspect_ratio, self.model.num_upsampling_layers)

    # --- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self, path=None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            pathlib.Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "Config":
        cfg = cls()
        apply(cfg, values, source)
        return cfg


class ConfigError(ValueError):
    """A config file or override names an unknown field or gives a value of the wrong type."""


SECTIONS = ("data", "model", "train", "export", "serve")

CHOICES = {
    "data.dataset_mode": ("synthetic", "cityscapes", "ade20k", "coco", "facades", "custom"),
    "data.preprocess_mode": (
        "resize_and_crop", "crop", "scale_width", "scale_width_and_crop",
        "scale_shortside", "scale_shortside_and_crop", "fixed", "none",
    ),
    "data.on_bad_file": ("stop", "skip"),
    "model.netG": ("spade", "pix2pixhd"),
    "model.num_upsampling_layers": ("normal", "more", "most"),
    "model.netD": ("multiscale", "n_layer"),
    "model.init_type": ("xavier", "xavier_uniform", "normal", "kaiming", "orthogonal", "none"),
    "train.gan_mode": ("hinge", "ls", "original", "w"),
    "train.distribute": ("auto", "none", "mirrored", "multiworker"),
    "train.jit_compile": ("auto", "on", "off"),
    "train.mixed_precision": ("off", "on"),
    "export.precision": ("float32", "bfloat16"),
}


def _fields(obj) -> typing.Dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def _unknown(key: str, valid: typing.Iterable[str], where: str) -> ConfigError:
    valid = sorted(valid)
    by_name = {v.split(".")[-1]: v for v in valid}
    close = [by_name[c] for c in difflib.get_close_matches(key.split(".")[-1], by_name, n=3)]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"{where}: unknown config key '{key}'.{hint} Valid keys: {', '.join(valid)}")


def _coerce(value, annotation, key: str, where: str):
    """Checks `value` against a field's annotation; ints are accepted for floats."""
    origin = typing.get_origin(annotation)
    if origin in (list, typing.List):
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: '{key}' must be a list, got {value!r}")
        return [_coerce(v, item_type, key, where) for v in value]
    if annotation is float and not isinstance(value, bool):
        if isinstance(value, int):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
    if annotation is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise ConfigError(
            f"{where}: '{key}' must be of type {annotation.__name__}, got {value!r} ({type(value).__name__})"
        )
    return value


def apply(cfg: Config, values: dict, where: str) -> None:
    """Merges a nested {section: {field: value}} mapping into `cfg`, checking keys and types."""
    top = _fields(cfg)
    hints = typing.get_type_hints(Config)
    for key, value in (values or {}).items():
        if key not in top:
            raise _unknown(key, top, where)
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{key}' must be a mapping of fields, got {value!r}")
            section = getattr(cfg, key)
            fields = _fields(section)
            section_hints = typing.get_type_hints(type(section))
            for name, v in value.items():
                if name not in fields:
                    raise _unknown(f"{key}.{name}", (f"{key}.{n}" for n in fields), where)
                choices = CHOICES.get(f"{key}.{name}")
                if choices and "on" in choices and isinstance(v, bool):  # YAML reads on/off as booleans
                    v = "on" if v else "off"
                v = _coerce(v, section_hints[name], f"{key}.{name}", where)
                if choices and v not in choices:
                    raise ConfigError(f"{where}: '{key}.{name}' must be one of {', '.join(choices)}; got {v!r}")
                setattr(section, name, v)
        else:
            setattr(cfg, key, _coerce(value, hints[key], key, where))


def all_keys(cfg: Config) -> typing.List[str]:
    keys = [k for k in _fields(cfg) if k not in SECTIONS]
    for section in SECTIONS:
        keys += [f"{section}.{n}" for n in _fields(getattr(cfg, section))]
    return keys


def parse_override(cfg: Config, text: str) -> dict:
    """`section.field=value` (or `field=value` when the name is unique) -> nested dict."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.field=value, e.g. model.ngf=16")
    key, raw = text.split("=", 1)
    key = key.strip().lstrip("-")
    keys = all_keys(cfg)
    if key not in keys:
        matches = [k for k in keys if k.split(".")[-1] == key]
        if len(matches) != 1:
            raise _unknown(key, keys, "command line")
        key = matches[0]
    value = yaml.safe_load(raw) if raw.strip() else ""
    if "." in key:
        section, name = key.split(".", 1)
        return {section: {name: value}}
    return {key: value}


def resolve_preset(name_or_path: str) -> pathlib.Path:
    path = pathlib.Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        return path
    preset = CONFIG_DIR / f"{name_or_path}.yaml"
    if not preset.exists():
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"no preset named '{name_or_path}'. Presets: {', '.join(names)}; or give a .yaml path")
    return preset


def load_config(preset: typing.Optional[str] = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Defaults, then a preset or YAML file, then `section.field=value` overrides."""
    cfg = Config()
    if preset:
        path = resolve_preset(preset)
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, got {type(values).__name__}")
        apply(cfg, values, str(path))
    for text in overrides:
        apply(cfg, parse_override(cfg, text), "command line")
    return cfg


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The two config arguments every entry point shares."""
    parser.add_argument(
        "--config", default="synthetic", help="preset name (configs/<name>.yaml) or a YAML file"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="section.field=value", help="config overrides, e.g. model.ngf=16"
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)
