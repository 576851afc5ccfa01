"""One typed configuration for training, export, evaluation and serving.

Field names follow the reference's options (NVlabs/SPADE `options/*.py`) so that its `opt.txt`
maps onto them one to one. A config is built from the defaults below, then a preset
(`configs/<name>.yaml`, or any YAML file), then `section.field=value` overrides from the command
line, in that order; the final config is saved beside every checkpoint and export.

A config is frozen once parsed: every section checks its fields (type, `CHOICES`, `RANGES`) when
it is made, and `replace(cfg, changes)` is the one way to change it, with the same checks. The
checks, choices and ranges are written in `spade_tf.config_rules`; this module holds the fields and
their defaults, and the reading of files and command lines (import either's names from here).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.resources
import pathlib
import typing

import yaml
from spade_tf_client.contract import min_size

from spade_tf.config_rules import (  # noqa: F401  (the rules are part of this module's API)
    CHOICES, IMPLEMENTATION_KEYS, RANGES, RENAMED, RETIRED, ConfigError, check, check_fields, field_types,
    unknown_key,
)


def _preset_dir():
    """The presets: package data `spade_tf/configs/` when installed (pyproject maps the top-level `configs/`
    folder there), the `configs/` folder beside the package in a source checkout."""
    try:
        return importlib.resources.files("spade_tf.configs")
    except ModuleNotFoundError:
        return pathlib.Path(__file__).resolve().parent.parent / "configs"


CONFIG_DIR = _preset_dir()


class _Section:
    """A section of the config: frozen, every field checked when one is made (or replaced)."""

    def __post_init__(self):
        check_fields(self, f"{_SECTION_NAMES[type(self)]}.", "config", SECTION_CLASSES)


@dataclasses.dataclass(frozen=True)
class DataConfig(_Section):
    dataset_mode: str = "synthetic"  # synthetic | cityscapes | ade20k | coco | facades | custom
    dataroot: str = ""
    label_dir: str = ""  # custom mode
    image_dir: str = ""  # custom mode
    instance_dir: str = ""  # custom mode; empty = no instance maps
    label_nc: int = 13  # number of classes, not counting the unknown label
    contain_dontcare_label: bool = False  # label 255 becomes index label_nc ("unknown")
    no_instance: bool = True  # True: no instance edge channel
    class_names: typing.Tuple[str, ...] = ()  # empty: the preset's
    preprocess_mode: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    aspect_ratio: float = 1.0  # width / height
    no_flip: bool = False
    no_pairing_check: bool = False
    max_dataset_size: int = 0  # 0 = all
    on_bad_file: str = "stop"  # stop | skip
    synthetic_size: int = 1000  # samples per epoch of the built-in dataset
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Section):
    netG: str = "spade"  # spade | pix2pixhd
    ngf: int = 64
    num_upsampling_layers: str = "normal"  # normal | more | most
    norm_G: str = "spectralspadesyncbatch3x3"
    spade_impl: str = "regions"  # dense | regions: SPADE's layout branch per pixel or once per class region
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


@dataclasses.dataclass(frozen=True)
class TrainConfig(_Section):
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
    # trade speed for memory: oneDNN's tensors from the system allocator (training/memory.py) and the
    # VGG loss's fake pass rematerialised (losses/vgg.py): 600-900 MiB lower peak, 6-21 % slower on CPU
    # (ADE20K batch 2, 2026-12-03, before the default's later savings: README, "Memory")
    low_memory: bool = False
    spade_lookups: bool = False  # model.spade_impl=regions also in training (mlp_shared as lookups); off: dense, measured faster
    save_every_steps: int = 500
    # on SIGTERM/SIGINT: seconds to finish the step in flight, save it and exit (code 42 after SIGTERM);
    # Kubernetes' terminationGracePeriodSeconds must be longer (deploy/README.md)
    preemption_grace_seconds: float = 60.0
    keep_checkpoints: int = 3
    keep_every_n_hours: float = 0.0
    log_every_steps: int = 10
    sample_every_steps: int = 200
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class ExportConfig(_Section):
    export_dir: str = "exports/spade"  # TF Serving's model base path
    model_name: str = "spade"
    version: int = 0  # 0: the next free version
    precision: str = "float32"  # float32 | bfloat16
    warmup_requests: int = 2


@dataclasses.dataclass(frozen=True)
class EvalConfig(_Section):
    """`python -m spade_tf.generate` (synthesis, with --evaluate its scores) and `python -m spade_tf.evaluation`."""

    split: str = "test"  # dataset split to synthesise: train | val | test (= val)
    how_many: int = 0  # only the first N layouts; 0 = all
    seeds: typing.Tuple[int, ...] = ()  # VAE models: one image per seed; empty = [0]
    batch_size: int = 1  # images per generator and per feature-extractor call
    segmenter: str = "auto"  # auto (builtin on the built-in data, else none) | builtin | none | a SavedModel folder
    extractor: str = "none"  # features for FID/KID: none | inception-2015 (comparable) | keras-inceptionv3
    inception_graph: str = ""  # inception-2015: local classify_image_graph_def.pb
    keras_inception_weights: str = ""  # keras-inceptionv3: local weights file without the top
    kid_subsets: int = 100  # KID: random subsets (the usual default of torch-fidelity, clean-fid)
    kid_subset_size: int = 1000  # KID: images per subset (fewer when a set is smaller)


@dataclasses.dataclass(frozen=True)
class ServeConfig(_Section):
    """`python -m serving.server`'s flags and their defaults; names are tensorflow_model_server's where it has one."""

    port: int = 8500  # gRPC; 0: a free port
    rest_api_port: int = 0  # 0: no REST API (TF Serving's default; its Docker image uses 8501)
    host: str = "127.0.0.1"  # ours: the address both ports listen on; 0.0.0.0 for all interfaces
    model_name: str = "spade"
    model_base_path: str = ""
    model_config_file: str = ""  # text ModelServerConfig; replaces model_name/model_base_path
    model_config_file_poll_wait_seconds: float = 0.0  # 0: read once at start
    file_system_poll_wait_seconds: float = 1.0  # <= 0: look for versions once at start
    enable_batching: bool = True
    batching_parameters_file: str = ""
    max_batch_size: int = 8  # batching without a parameters file, or fields the file leaves out
    batch_timeout_micros: int = 0
    max_pixels: int = 4096 * 4096  # ours: batch x height x width per request input
    rest_api_max_body_bytes: int = 64 * 2**20  # ours: largest REST request body
    ssl_cert: str = ""  # ours: PEM files, both or neither, for gRPC over TLS
    ssl_key: str = ""
    grace_seconds: float = 10.0  # ours: on SIGTERM/SIGINT, time for requests in flight


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "spade"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    serve: ServeConfig = dataclasses.field(default_factory=ServeConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    def __post_init__(self):
        check_fields(self, "", "config", SECTION_CLASSES)

    # --- derived quantities --------------------------------------------------------------
    @property
    def semantic_nc(self) -> int:
        """Channels of the network's semantic input (`spade_tf.semantics.semantic_nc`)."""
        from spade_tf.semantics import semantic_nc

        d = self.data
        return semantic_nc(d.label_nc, d.contain_dontcare_label, not d.no_instance)

    @property
    def image_size(self) -> typing.Tuple[int, int]:
        """(H, W) the generator produces at the configured crop size, as the reference computes it.

        SPADE: width crop_size rounded down to 2^n blocks, height round(blocks / aspect_ratio) blocks.
        pix2pixHD: its own rule (`__make_power_2`): width crop_size and height crop_size / aspect_ratio,
        each rounded to the nearest multiple of 2^resnet_n_downsample, and at least its minimum size.
        """
        if self.model.netG == "pix2pixhd":
            base = 2**self.model.resnet_n_downsample
            smallest = min_size(base, self.model.resnet_kernel_size)
            height, width = (max(smallest, int(round(size / base) * base))
                             for size in (self.data.crop_size / self.data.aspect_ratio, self.data.crop_size))
            return height, width
        from spade_tf.models.generator import image_size

        return image_size(self.data.crop_size, self.data.aspect_ratio, self.model.num_upsampling_layers)

    # --- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Nested plain values (tuples as lists), as saved in config.yaml."""
        def plain(value):
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return list(value) if isinstance(value, tuple) else value

        return plain(dataclasses.asdict(self))

    def to_yaml(self, path=None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            pathlib.Path(path).write_text(text)
        return text


SECTION_CLASSES = {
    "data": DataConfig, "model": ModelConfig, "train": TrainConfig,
    "export": ExportConfig, "serve": ServeConfig, "eval": EvalConfig,
}
SECTIONS = tuple(SECTION_CLASSES)


def _fields(obj) -> typing.Dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def checked_value(key: str, value, where: str = "config"):
    """`value` for field `key` ("section.field") after the type, choice and range checks (ConfigError)."""
    section, _, name = key.rpartition(".")
    return check(key, value, field_types(SECTION_CLASSES[section] if section else Config)[name], where)


_SECTION_NAMES = {cls: name for name, cls in SECTION_CLASSES.items()}


def _nested(values: dict) -> dict:
    """{"train.lr": x, "model": {...}, "name": y} -> {"train": {"lr": x}, "model": {...}, "name": y}."""
    nested = {}
    for key, value in (values or {}).items():
        if "." in key:
            section, name = key.split(".", 1)
            nested.setdefault(section, {})
            if isinstance(nested[section], dict):
                nested[section][name] = value
        elif key in SECTIONS and isinstance(value, dict) and isinstance(nested.get(key), dict):
            nested[key].update(value)
        else:
            nested[key] = value
    return nested


def replace(cfg: Config, changes: typing.Optional[dict] = None, where: str = "config", **fields) -> Config:
    """A copy of `cfg` with `changes`, after the same checks as a config file: the one way to change a config.

    `changes` is a mapping like a config file's ({"train": {"lr": 1e-3}, "name": "x"}) or with
    dotted keys ({"train.lr": 1e-3}); `fields` are top-level fields (`name=...`) or whole sections.
    Keys of earlier versions (RENAMED, RETIRED) are accepted, so saved configs still load. `where`
    names the source in error messages.
    """
    top = _fields(cfg)
    new = {}
    for key, value in _nested({**(changes or {}), **fields}).items():
        if key not in top:
            raise unknown_key(key, top, where)
        if key not in SECTIONS or isinstance(value, SECTION_CLASSES[key]):
            new[key] = value if key in SECTIONS else checked_value(key, value, where)
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a mapping of fields, got {value!r}")
        section = getattr(cfg, key)
        names = _fields(section)
        changed = {}
        for name, v in value.items():
            if f"{key}.{name}" in RETIRED:
                continue
            name = RENAMED.get(f"{key}.{name}", f"{key}.{name}").split(".", 1)[1]
            if name not in names:
                raise unknown_key(f"{key}.{name}", (f"{key}.{n}" for n in names), where)
            changed[name] = checked_value(f"{key}.{name}", v, where)
        new[key] = dataclasses.replace(section, **changed)
    return dataclasses.replace(cfg, **new)


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
        if len(matches) > 1:
            raise ConfigError(f"command line: '{key}' is in several sections; write one of {', '.join(matches)}")
        if not matches:
            raise unknown_key(key, keys, "command line")
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
    if not preset.is_file():
        names = sorted(p.name[:-5] for p in CONFIG_DIR.iterdir() if p.name.endswith(".yaml"))
        raise ConfigError(f"no preset named '{name_or_path}'. Presets: {', '.join(names)}; or give a .yaml path")
    return preset


def parse_overrides(overrides: typing.Union[typing.Sequence[str], dict] = ()) -> dict:
    """`section.field=value` texts -> one nested mapping of changes for `replace` (a mapping passes as it is)."""
    if isinstance(overrides, dict):
        return overrides
    changes = {}
    for text in overrides:
        for key, value in parse_override(Config(), text).items():
            if isinstance(value, dict):
                changes.setdefault(key, {}).update(value)
            else:
                changes[key] = value
    return changes


def load_config(preset: typing.Optional[str] = None, overrides: typing.Union[typing.Sequence[str], dict] = ()) -> Config:
    """Defaults, then a preset or YAML file, then overrides (`section.field=value` texts or `parse_overrides`'s mapping)."""
    cfg = Config()
    if preset:
        path = resolve_preset(preset)
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, got {type(values).__name__}")
        cfg = replace(cfg, values, str(path))
    return replace(cfg, parse_overrides(overrides), "command line")


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
