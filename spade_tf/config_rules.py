"""What a valid config value is: each field's choices and range, the type check every value passes,
and the keys of earlier versions that still load.

`spade_tf.config` holds the sections (fields, types, defaults) and runs every value through `check`
when a section is made or replaced; import these names from there (`spade_tf.config.CHOICES`, ...).
"""

import difflib
import functools
import os
import typing


class ConfigError(ValueError):
    """A config file or override names an unknown field or gives a value of the wrong type."""


CHOICES = {
    "data.dataset_mode": ("synthetic", "cityscapes", "ade20k", "coco", "facades", "custom"),
    "data.preprocess_mode": (
        "resize_and_crop", "crop", "scale_width", "scale_width_and_crop",
        "scale_shortside", "scale_shortside_and_crop", "fixed", "none",
    ),
    "data.on_bad_file": ("stop", "skip"),
    "model.netG": ("spade", "pix2pixhd"),
    "model.num_upsampling_layers": ("normal", "more", "most"),
    "model.spade_impl": ("dense", "regions"),
    "model.netD": ("multiscale", "n_layer"),
    "model.init_type": ("xavier", "xavier_uniform", "normal", "kaiming", "orthogonal", "none"),
    "train.gan_mode": ("hinge", "ls", "original", "w"),
    "train.distribute": ("auto", "none", "mirrored", "multiworker"),
    "train.jit_compile": ("auto", "on", "off"),
    "train.mixed_precision": ("off", "on"),
    "export.precision": ("float32", "bfloat16"),
    "eval.split": ("train", "val", "test"),
    "eval.extractor": ("none", "inception-2015", "keras-inceptionv3"),
}


def _at_least(low):
    return f">= {low}", lambda v: v >= low


def _in_unit_interval():
    return "in [0, 1)", lambda v: 0 <= v < 1


RANGES = {  # key -> (what the value must be, test); fields not named take any value of their type
    **{f"data.{n}": _at_least(1) for n in ("label_nc", "load_size", "crop_size", "synthetic_size")},
    "data.max_dataset_size": _at_least(0),
    "data.aspect_ratio": ("> 0", lambda v: v > 0),
    **{f"model.{n}": _at_least(1) for n in ("ngf", "ndf", "z_dim", "n_layers_D", "num_D", "resnet_kernel_size",
                                            "resnet_initial_kernel_size")},
    **{f"model.{n}": _at_least(0) for n in ("init_variance", "resnet_n_downsample", "resnet_n_blocks")},
    **{f"train.{n}": _at_least(1) for n in ("batch_size", "D_steps_per_G", "save_every_steps", "keep_checkpoints",
                                            "log_every_steps", "sample_every_steps")},
    **{f"train.{n}": _at_least(0) for n in ("niter", "niter_decay", "steps_per_epoch", "max_steps", "lr",
                                            "lambda_feat", "lambda_vgg", "lambda_kld", "keep_every_n_hours")},
    **{f"train.{n}": _in_unit_interval() for n in ("beta1", "beta2", "ema_decay")},
    "train.preemption_grace_seconds": ("> 0", lambda v: v > 0),
    "export.version": _at_least(0),
    "export.warmup_requests": _at_least(0),
    **{f"eval.{n}": _at_least(1) for n in ("batch_size", "kid_subsets")},
    "eval.how_many": _at_least(0),
    "eval.kid_subset_size": _at_least(2),
    **{f"serve.{n}": _at_least(0) for n in ("port", "rest_api_port", "batch_timeout_micros", "grace_seconds")},
    **{f"serve.{n}": _at_least(1) for n in ("max_batch_size", "max_pixels", "rest_api_max_body_bytes")},
}

RENAMED = {  # old key -> new key: configs saved by earlier versions (beside checkpoints and exports) still load
    "serve.poll_wait_seconds": "serve.file_system_poll_wait_seconds",
}
RETIRED = {"data.shuffle_buffer"}  # keys of earlier versions that no longer do anything: ignored when read
# Keys that choose how a network computes, not which network it is (same weights, same outputs to
# float rounding): a run resumes and an export loads whatever their saved values.
IMPLEMENTATION_KEYS = frozenset({"model.spade_impl"})


def unknown_key(key: str, valid: typing.Iterable[str], where: str) -> ConfigError:
    valid = sorted(valid)
    by_name = {v.split(".")[-1]: v for v in valid}
    close = [by_name[c] for c in difflib.get_close_matches(key.split(".")[-1], by_name, n=3)]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"{where}: unknown config key '{key}'.{hint} Valid keys: {', '.join(valid)}")


def coerce(value, annotation, key: str, where: str):
    """Checks `value` against a field's annotation; ints are accepted for floats, paths for strings."""
    if typing.get_origin(annotation) is tuple:  # Tuple[T, ...]: a list in YAML and on the command line
        item_type = typing.get_args(annotation)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: '{key}' must be a list, got {value!r}")
        return tuple(coerce(v, item_type, key, where) for v in value)
    if annotation is float and not isinstance(value, bool):
        if isinstance(value, int):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
    if annotation is str and isinstance(value, os.PathLike):
        return os.fspath(value)
    if annotation is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise ConfigError(
            f"{where}: '{key}' must be of type {annotation.__name__}, got {value!r} ({type(value).__name__})"
        )
    return value


def check(key: str, value, annotation, where: str = "config"):
    """`value` for field `key` ("section.field", of type `annotation`) after the type, choice and range
    checks; a ConfigError names the source (`where`), the key and what is valid."""
    choices = CHOICES.get(key)
    if choices and "on" in choices and isinstance(value, bool):  # YAML reads on/off as booleans
        value = "on" if value else "off"
    value = coerce(value, annotation, key, where)
    if choices and value not in choices:
        raise ConfigError(f"{where}: '{key}' must be one of {', '.join(choices)}; got {value!r}")
    bound, test = RANGES.get(key, (None, None))
    if test and not test(value):
        raise ConfigError(f"{where}: '{key}' must be {bound}; got {value!r}")
    return value


@functools.cache
def field_types(cls) -> dict:
    return typing.get_type_hints(cls)


def check_fields(obj, prefix: str, where: str, sections: dict) -> None:
    """Runs every field of a config (prefix "") or section (prefix "train.", ...) through `check`: a frozen
    object's post-init. `sections`: the config's section classes by name, whose fields are checked by theirs."""
    for name, annotation in field_types(type(obj)).items():
        value = getattr(obj, name)
        if not prefix and name in sections:
            if not isinstance(value, sections[name]):
                raise ConfigError(f"{where}: '{name}' must be a {sections[name].__name__}, got {value!r}")
            continue
        checked = check(prefix + name, value, annotation, where)
        if checked is not value:
            object.__setattr__(obj, name, checked)
