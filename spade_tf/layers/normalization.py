"""The reference's normalisation layers and its norm strings.

`norm_G` strings look like `spectralspadesyncbatch3x3`: optional spectral norm on the residual
blocks' convolutions, then the SPADE layer's parameter-free norm (`syncbatch`, `batch` or
`instance`) and its kernel size. `norm_D` / `norm_E` strings look like `spectralinstance`:
optional spectral norm, then `instance`, `batch`, `sync_batch` or `none`; `conv_norm` builds such
a convolution with its spectral norm and norm, as the reference's `get_nonspade_norm_layer`.

Batch norm follows PyTorch's defaults: momentum 0.1 in PyTorch's sense is Keras's
`momentum=0.9`, epsilon 1e-5. Keras updates the moving variance with the biased batch variance,
PyTorch with the unbiased one (n / (n - 1) larger); the difference is below 1% once a batch holds
more than a hundred values per channel, and does not affect training-mode outputs.
"""

import re
import typing

import keras
from keras import ops

from spade_tf.layers.spectral_norm import SpectralNorm

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


def _instance_norm(name, dtype):
    return keras.layers.GroupNormalization(groups=-1, center=False, scale=False, epsilon=1e-5, name=name, dtype=dtype)


@keras.saving.register_keras_serializable(package="spade_tf")
class ParamFreeBatchNorm(keras.layers.BatchNormalization):
    """SPADE's batch norm without scale and shift, whose training gradient needs only its output.

    With batch statistics, x_hat = (x - mean) / sqrt(var + eps) has the gradient
    dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sqrt(var + eps), means over the batch and the
    pixels (over every replica when synchronized). The SPADE modulation keeps x_hat for its own
    backward pass; written this way the norm keeps nothing more, where the plain form also keeps x.
    Inference, masks and the affine case are Keras's `BatchNormalization`, whose weights it has.
    """

    def uses_batch_statistics(self, training) -> bool:
        """Whether `call` normalises with the batch's statistics through `normalize` (else Keras's call)."""
        return bool(training) and self.trainable and not (self.center or self.scale or self.renorm)

    def call(self, inputs, training=None, mask=None):
        if mask is not None or not self.uses_batch_statistics(training):
            return super().call(inputs, training=training, mask=mask)
        normalized, mean, variance = self.normalize(inputs)
        self.track(mean, variance)
        return normalized

    def inference_affine(self):
        """(a, b) per channel, float32: at inference (moving statistics) the norm is x * a + b."""
        a = ops.rsqrt(ops.cast(self.moving_variance, "float32") + self.epsilon)
        return a, -ops.cast(self.moving_mean, "float32") * a

    def track(self, mean, variance):
        """Update the moving statistics with a batch's, as Keras's training call does."""
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))

    def normalize(self, inputs):
        """(x_hat, batch mean, batch variance); x_hat's gradient is computed from x_hat alone."""
        mean, variance = self._moments(ops.stop_gradient(ops.cast(inputs, "float32")), None)
        inverse = ops.rsqrt(variance + self.epsilon)
        pixel_axes = [a for a in self._reduction_axes if a != 0]

        @ops.custom_gradient
        def normalize(x):
            x_hat = ops.cast((ops.cast(x, "float32") - mean) * inverse, self.compute_dtype)

            def grad(*args, upstream=None):
                g = ops.cast(args[0] if upstream is None else upstream, "float32")
                y = ops.cast(x_hat, "float32")
                # mean(g) and mean(g * y): per example over the pixels, then over the batch and replicas
                per_example = ops.concatenate([ops.mean(g, axis=pixel_axes, keepdims=True),
                                               ops.mean(g * y, axis=pixel_axes, keepdims=True)], axis=-1)
                means = ops.moments(per_example, axes=self._reduction_axes, synchronized=self.synchronized)[0]
                mean_g, mean_gy = ops.split(means, 2, axis=-1)
                return ops.cast((g - mean_g - y * mean_gy) * inverse, x.dtype)

            return x_hat, grad

        return normalize(inputs), mean, variance


def _batch_norm(synchronized, affine, name, dtype):
    layer = keras.layers.BatchNormalization if affine else ParamFreeBatchNorm
    return layer(
        momentum=0.9, epsilon=1e-5, center=affine, scale=affine, synchronized=synchronized, name=name,
        gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02), dtype=dtype,
    )


def param_free_norm(kind: str, name=None, dtype=None):
    """SPADE's normalisation without learned scale and shift: syncbatch, batch or instance."""
    if kind == "instance":
        return _instance_norm(name, dtype)
    if kind in ("syncbatch", "batch"):
        return _batch_norm(kind == "syncbatch", affine=False, name=name, dtype=dtype)
    raise ValueError(f"unknown parameter-free norm '{kind}'; expected syncbatch, batch or instance")


def nonspade_norm(kind: str, name=None, dtype=None):
    """The norm after a discriminator / encoder / pix2pixHD convolution, or None for `none`.

    Instance norm has no affine parameters (PyTorch's InstanceNorm2d default); batch norms do.
    """
    if kind == "instance":
        return _instance_norm(name, dtype)
    if kind in ("batch", "sync_batch"):
        return _batch_norm(kind == "sync_batch", affine=True, name=name, dtype=dtype)
    if kind == "none":
        return None
    raise ValueError(f"unknown norm '{kind}'; expected instance, batch, sync_batch or none")


class ConvNorm(typing.NamedTuple):
    """A convolution (spectral-normalised or not) and the norm after it (None for `none`)."""

    conv: keras.layers.Layer
    norm: typing.Optional[keras.layers.Layer]

    def __call__(self, x, training=None):
        kwargs = {} if training is None else {"training": training}
        x = self.conv(x, **kwargs)
        return x if self.norm is None else self.norm(x, **kwargs)


def conv_norm(norm, filters, kernel_size, names, strides=1, transpose=False, dtype=None) -> ConvNorm:
    """The reference's `get_nonspade_norm_layer`: a conv, spectral norm when `norm` starts with
    "spectral", then the norm; the conv has a bias only when no norm follows.

    `norm`: a norm_D / norm_E string, or None for a plain conv with bias. `names`: (conv, spectral
    norm, norm) layer names; the NVlabs importer and saved checkpoints rely on them. `transpose`:
    Conv2DTranspose. `dtype`: every layer's dtype policy.
    """
    spectral, kind = parse_norm(norm) if norm else (False, "none")
    conv_name, sn_name, norm_name = names
    conv_class = keras.layers.Conv2DTranspose if transpose else keras.layers.Conv2D
    conv = conv_class(filters, kernel_size, strides=strides, use_bias=kind == "none", name=conv_name, dtype=dtype)
    if spectral:
        conv = SpectralNorm(conv, name=sn_name, dtype=dtype)
    return ConvNorm(conv, nonspade_norm(kind, name=norm_name, dtype=dtype))
