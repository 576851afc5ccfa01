"""The multiscale PatchGAN discriminator (pix2pixHD's, used by SPADE; reference `discriminator.py`)."""

import keras
from keras import ops

from spade_tf.layers import LeakyReLU, SymmetricPad2D, conv_norm
from spade_tf.models.network import Network, policy


@keras.saving.register_keras_serializable(package="spade_tf")
class AvgPoolExcludePad(keras.layers.Layer):
    """3x3 average pooling, stride 2, one pixel of padding left out of the mean.

    PyTorch's `avg_pool2d(kernel_size=3, stride=2, padding=1, count_include_pad=False)`, which
    the multiscale discriminator uses between scales ("same" pooling pads differently).
    """

    def call(self, x):
        pad = [[0, 0], [1, 1], [1, 1], [0, 0]]
        total = ops.average_pool(ops.pad(x, pad), 3, 2, padding="valid")
        count = ops.average_pool(ops.pad(ops.ones_like(x[..., :1]), pad), 3, 2, padding="valid")
        return total / count

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        half = lambda n: None if n is None else (n - 1) // 2 + 1  # noqa: E731
        return (b, half(h), half(w), c)


def _conv_group(x, filters, stride, norm, name, dtype):
    """Conv 4x4 (PyTorch padding 2) [+ spectral norm] [+ norm]."""
    x = SymmetricPad2D(2, name=f"{name}_pad", dtype=dtype)(x)
    names = (f"{name}_conv", f"{name}_sn", f"{name}_norm")
    return conv_norm(norm, filters, 4, names, strides=stride, dtype=dtype)(x)


@keras.saving.register_keras_serializable(package="spade_tf")
class NLayerDiscriminator(Network):
    """PatchGAN: a plain 4x4 stride-2 conv, `n_layers_D - 1` normalised convs (widths doubling up to
    512, the last one stride 1), then a 4x4 conv to one logit per patch.

    Input: concat(semantic map, image) [batch, H, W, input_nc]. Output: the list of every group's
    output (after its leaky ReLU; the last one is the logits), for feature matching.
    """

    def __init__(self, input_nc, ndf=64, n_layers_D=4, norm_D="spectralinstance", dtype=None, **kwargs):
        config = dict(input_nc=input_nc, ndf=ndf, n_layers_D=n_layers_D, norm_D=norm_D)
        dtype = policy(dtype)
        inputs = keras.Input((None, None, input_nc), name="input")
        features = []
        x = _conv_group(inputs, ndf, 2, None, "model0", dtype)
        x = LeakyReLU(0.2, dtype=dtype)(x)
        features.append(x)
        nf = ndf
        for n in range(1, n_layers_D):
            nf = min(nf * 2, 512)
            x = _conv_group(x, nf, 1 if n == n_layers_D - 1 else 2, norm_D, f"model{n}", dtype)
            x = LeakyReLU(0.2, dtype=dtype)(x)
            features.append(x)
        features.append(_conv_group(x, 1, 1, None, f"model{n_layers_D}", dtype))
        features = [keras.layers.Identity(dtype="float32", name=f"feature{i}")(f) for i, f in enumerate(features)]
        super().__init__(inputs, features, config, dtype, **kwargs)
        self.input_nc, self.ndf, self.n_layers_D, self.norm_D = input_nc, ndf, n_layers_D, norm_D


@keras.saving.register_keras_serializable(package="spade_tf")
class MultiscaleDiscriminator(Network):
    """`num_D` PatchGANs, scale i seeing the input average-pooled i times.

    Output: a list over scales of lists of features (the last of each is that scale's logits).
    """

    def __init__(self, input_nc, ndf=64, n_layers_D=4, norm_D="spectralinstance", num_D=2, dtype=None, **kwargs):
        config = dict(input_nc=input_nc, ndf=ndf, n_layers_D=n_layers_D, norm_D=norm_D, num_D=num_D)
        dtype = policy(dtype)
        inputs = keras.Input((None, None, input_nc), name="input")
        outputs, x = [], inputs
        for i in range(num_D):
            d = NLayerDiscriminator(input_nc, ndf, n_layers_D, norm_D, name=f"discriminator_{i}", dtype=dtype)
            outputs.append(d(x))
            if i != num_D - 1:
                x = AvgPoolExcludePad(name=f"downsample_{i}", dtype=dtype)(x)
        super().__init__(inputs, outputs, config, dtype, **kwargs)
        self.input_nc, self.ndf, self.n_layers_D, self.norm_D, self.num_D = input_nc, ndf, n_layers_D, norm_D, num_D

    def __call__(self, inputs, *args, **kwargs):
        shape = tuple(inputs.shape)
        if len(shape) != 4 or shape[-1] not in (None, self.input_nc):
            raise ValueError(
                f"the discriminator expects concat(semantic map, image) [batch, H, W, {self.input_nc}]; got {shape}"
            )
        outputs = super().__call__(inputs, *args, **kwargs)
        # A functional model with one output returns it unwrapped: keep the list over scales for num_D=1.
        return [outputs] if self.num_D == 1 else outputs
