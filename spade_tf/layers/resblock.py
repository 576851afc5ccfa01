"""The SPADE residual block (Park et al., 2019, Fig. 4)."""

import keras
from keras import ops

from spade_tf.layers.activation import leaky_relu
from spade_tf.layers.normalization import ParamFreeBatchNorm, parse_spade_norm
from spade_tf.layers.resize import nearest_resize
from spade_tf.layers.spade import SPADE
from spade_tf.layers.spectral_norm import SpectralNorm


@keras.saving.register_keras_serializable(package="spade_tf")
class SPADEResBlock(keras.layers.Layer):
    """Two SPADE -> leaky ReLU(0.2) -> 3x3 conv stages plus a shortcut.

    The middle width is min(fin, fout). When fin != fout the shortcut is learned: SPADE then a
    1x1 conv without bias. Convolutions get spectral norm when `norm_G` starts with "spectral".

    Args:
        filters: fout, the block's output channels.
        norm_G: the reference's norm string, e.g. "spectralspadesyncbatch3x3".
        spade_impl: how the SPADE layers compute their layout branch, "dense" or "regions".
    """

    def __init__(self, filters, norm_G="spectralspadesyncbatch3x3", spade_impl="dense", **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.norm_G = norm_G
        self.spade_impl = spade_impl
        self.spectral, self.norm_type, self.spade_kernel_size = parse_spade_norm(norm_G)

    def _conv(self, filters, kernel_size, name, use_bias=True):
        conv = keras.layers.Conv2D(
            filters, kernel_size, padding="same", use_bias=use_bias, name=name, dtype=self.dtype_policy
        )
        return SpectralNorm(conv, name=f"{name}_sn", dtype=self.dtype_policy) if self.spectral else conv

    def _spade(self, name):
        return SPADE(self.norm_type, self.spade_kernel_size, spade_impl=self.spade_impl, name=name,
                     dtype=self.dtype_policy)

    def build(self, x_shape, segmap_shape):
        fin, fout = x_shape[-1], self.filters
        fmiddle = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.conv_0 = self._conv(fmiddle, 3, "conv_0")
        self.conv_1 = self._conv(fout, 3, "conv_1")
        self.norm_0 = self._spade("norm_0")
        self.norm_1 = self._spade("norm_1")
        middle_shape = tuple(x_shape[:-1]) + (fmiddle,)
        self.norm_0.build(x_shape, segmap_shape)
        self.conv_0.build(x_shape)
        self.norm_1.build(middle_shape, segmap_shape)
        self.conv_1.build(middle_shape)
        if self.learned_shortcut:
            self.norm_s = self._spade("norm_s")
            self.conv_s = self._conv(fout, 1, "conv_s", use_bias=False)
            self.norm_s.build(x_shape, segmap_shape)
            self.conv_s.build(x_shape)

    def call(self, x, segmap, training=None):
        # The block's SPADE layers share one resolution: the layout is resized and read once for all.
        height, width = ops.shape(x)[1], ops.shape(x)[2]
        segmap = nearest_resize(segmap, height, width)
        layout = self.norm_0.layout(segmap, height, width, training)
        normalized = None
        if self.learned_shortcut:
            normalized = self._normalize_once(x, training)
            x_s = self.norm_s(x, segmap, layout=layout, normalized=normalized, training=training)
            x_s = self.conv_s(x_s, training=training)
        else:
            x_s = x
        dx = leaky_relu(self.norm_0(x, segmap, layout=layout, normalized=normalized, training=training), 0.2)
        dx = self.conv_0(dx, training=training)
        dx = leaky_relu(self.norm_1(dx, segmap, layout=layout, training=training), 0.2)
        return x_s + self.conv_1(dx, training=training)

    def _normalize_once(self, x, training):
        """norm_0 and norm_s normalise the same x; in training both use the batch's statistics, so one
        normalised copy serves both (the backward pass keeps one) and each updates its moving
        statistics with them. None where the norms differ (inference, instance norm)."""
        norms = (self.norm_0.param_free_norm, self.norm_s.param_free_norm)
        if not all(isinstance(n, ParamFreeBatchNorm) and n.uses_batch_statistics(training) for n in norms):
            return None
        normalized, mean, variance = norms[0].normalize(x)
        for norm in norms:
            norm.track(mean, variance)
        return normalized

    def compute_output_shape(self, x_shape, segmap_shape):
        return tuple(x_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "norm_G": self.norm_G, "spade_impl": self.spade_impl}
