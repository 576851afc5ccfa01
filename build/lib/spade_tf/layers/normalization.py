"""The reference's normalisation layers and its norm strings.

`norm_G` strings look like `spectralspadesyncbatch3x3`: optional spectral norm on the residual
blocks' convolutions, then the SPADE layer's parameter-free norm (`syncbatch`, `batch` or
`instance`) and its kernel size. `norm_D` / `norm_E` strings look like `spectralinstance`:
optional spectral norm, then `instance`, `batch`, `sync_batch` or `none`.

Batch norm follows PyTorch's defaults: momentum 0.1 in PyTorch's sense is Keras's
`momentum=0.9`, epsilon 1e-5. Keras updates the moving variance with the biased batch variance,
PyTorch with the unbiased one (n / (n - 1) larger); the difference is below 1% once a batch holds
more than a hundred values per channel, and does not affect training-mode outputs.
"""

import re

import keras

_SPADE_NORM = re.compile(r"^(spectral)?spade(syncbatch|batch|instance)(\d+)x(\d+)$")
_NORM = re.compile(r"^(spectral)?(instance|batch|sync_batch|syncbatch|none)$")


def parse_spade_norm(norm_G: str):
    """`spectralspadesyncbatch3x3` -> (spectral=True, param_free="syncbatch", kernel_size=3)."""
    m = _SPADE_NORM.match(norm_G)
    if not m or m.group(3) != m.group(4):
        raise ValueError(
            f"norm_G '{norm_G}' is not a SPADE norm string; expected [spectral]spade<syncbatch|batch|instance><k>x<k>,"
            " e.g. spectralspadesyncbatch3x3"
        )
    return bool(m.group(1)), m.group(2), int(m.group(3))


def parse_norm(norm: str):
    """`spectralinstance` -> (spectral=True, kind="instance")."""
    m = _NORM.match(norm)
    if not m:
        raise ValueError(
            f"norm '{norm}' is not a valid norm string; expected [spectral]<instance|batch|sync_batch|none>,"
            " e.g. spectralinstance"
        )
    return bool(m.group(1)), m.group(2).replace("syncbatch", "sync_batch")


def _batch_norm(synchronized, affine, name):
    return keras.layers.BatchNormalization(
        momentum=0.9, epsilon=1e-5, center=affine, scale=affine, synchronized=synchronized, name=name,
        gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02),
    )


def param_free_norm(kind: str, name=None):
    """SPADE's normalisation without learned scale and shift: syncbatch, batch or instance."""
    if kind == "instance":
        return keras.layers.GroupNormalization(groups=-1, center=False, scale=False, epsilon=1e-5, name=name)
    if kind in ("syncbatch", "batch"):
        return _batch_norm(kind == "syncbatch", affine=False, name=name)
    raise ValueError(f"unknown parameter-free norm '{kind}'; expected syncbatch, batch or instance")


def nonspade_norm(kind: str, name=None):
    """The norm after a discriminator / encoder / pix2pixHD convolution, or None for `none`.

    Instance norm has no affine parameters (PyTorch's InstanceNorm2d default); batch norms do.
    """
    if kind == "instance":
        return keras.layers.GroupNormalization(groups=-1, center=False, scale=False, epsilon=1e-5, name=name)
    if kind in ("batch", "sync_batch"):
        return _batch_norm(kind == "sync_batch", affine=True, name=name)
    if kind == "none":
        return None
    raise ValueError(f"unknown norm '{kind}'; expected instance, batch, sync_batch or none")
