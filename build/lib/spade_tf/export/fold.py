"""Spectral norm folded into plain kernels, for inference.

At inference `SpectralNorm` divides its kernel by sigma = u . (W v), from the stored
power-iteration vectors, on every call. For export that division is done once: the same network
is built with "spectral" removed from its norm strings, its kernels get kernel / sigma and every
other weight is copied, so the exported graph holds plain convolutions.
"""

import contextlib
import dataclasses

import keras

from spade_tf.layers import SpectralNorm
from spade_tf.models import build_encoder, build_generator

PRECISION_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}  # export.precision -> Keras policy


@contextlib.contextmanager
def dtype_policy(name):
    """Keras's global dtype policy set to `name` while networks are built inside the block."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def inference_networks(cfg, generator, encoder=None):
    """(generator, encoder or None) for export: spectral norm folded, computing in `cfg.export.precision`.

    `generator` and `encoder` are the trained networks built from `cfg`; the new ones are built
    from `cfg` with plain norms under the precision's Keras dtype policy (variables stay float32).
    """
    if cfg.model.use_vae and encoder is None:
        raise ValueError("this is a VAE model (model.use_vae): pass its encoder, encode_style needs it")
    model = dataclasses.replace(
        cfg.model, norm_G=cfg.model.norm_G.removeprefix("spectral"), norm_E=cfg.model.norm_E.removeprefix("spectral")
    )
    plain = dataclasses.replace(cfg, model=model)
    with dtype_policy(PRECISION_POLICIES[cfg.export.precision]):
        folded_generator, folded_encoder = build_generator(plain), build_encoder(plain)
    fold_spectral_norm(generator, folded_generator)
    if folded_encoder is not None:
        fold_spectral_norm(encoder, folded_encoder)
    return folded_generator, folded_encoder


def folded_weights(source) -> dict:
    """Weight path -> value of `source` as the same network without spectral norm would hold them.

    A `SpectralNorm` at `<parent>/<name>_sn` wrapping a conv `<name>` gives `<parent>/<name>/kernel`
    = kernel / sigma (and its bias); its u and v go away.
    """
    values, wrapped = {}, set()
    for layer in source._flatten_layers(include_self=False, recursive=True):
        if not isinstance(layer, SpectralNorm):
            continue
        parent = layer.path.rpartition("/")[0]
        conv = f"{parent}/{layer.layer.name}" if parent else layer.layer.name
        values[f"{conv}/kernel"] = layer.normalized_kernel(training=False)
        if layer.layer.use_bias:
            values[f"{conv}/bias"] = layer.layer.bias
        wrapped.update(id(w) for w in layer.weights)
    for weight in source.weights:
        if id(weight) not in wrapped:
            values[weight.path] = weight
    return values


def fold_spectral_norm(source, target) -> None:
    """Sets `target` (built without spectral norm) to compute what `source` computes at inference."""
    values = folded_weights(source)
    targets = {w.path: w for w in target.weights}
    if len(targets) != len(target.weights) or values.keys() != targets.keys():
        missing, extra = sorted(targets.keys() - values.keys()), sorted(values.keys() - targets.keys())
        raise ValueError(
            f"cannot fold '{source.name}' into '{target.name}': their weights differ "
            f"(not in the source: {missing[:5]}; not in the target: {extra[:5]}); "
            "build both from the same config"
        )
    for path, weight in targets.items():
        value = values[path]
        if tuple(value.shape) != tuple(weight.shape):
            raise ValueError(
                f"cannot fold '{source.name}' into '{target.name}': {path} has shape {tuple(value.shape)} "
                f"in the source and {tuple(weight.shape)} in the target; build both from the same config"
            )
        weight.assign(value)
