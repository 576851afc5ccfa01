"""The SPADE layer: spatially-adaptive (de)normalisation (Park et al., 2019, Sec. 3)."""

import keras
from keras import ops

from spade_tf.config_rules import CHOICES
from spade_tf.layers import spade_regions
from spade_tf.layers.normalization import ParamFreeBatchNorm, param_free_norm
from spade_tf.layers.resize import nearest_resize

SPADE_IMPLS = CHOICES["model.spade_impl"]  # the config's list, written once


@keras.saving.register_keras_serializable(package="spade_tf")
class SPADE(keras.layers.Layer):
    """norm(x) * (1 + gamma(segmap)) + beta(segmap), gamma and beta predicted per pixel.

    The layout is nearest-resized to the feature map, passed through a shared k x k conv to
    `hidden_channels` with ReLU, then through two k x k convs to gamma and beta.

    Args:
        norm_type: the parameter-free norm, "syncbatch", "batch" or "instance".
        kernel_size: k of the three convolutions.
        hidden_channels: width of the shared conv (128 in the reference, hard-coded there).
        spade_impl: "dense" (three convolutions) or "regions" (the same function computed once
            per class region, `spade_regions`; 3x3 kernels only, other sizes run dense).
    """

    def __init__(self, norm_type="syncbatch", kernel_size=3, hidden_channels=128, spade_impl="dense", **kwargs):
        super().__init__(**kwargs)
        if spade_impl not in SPADE_IMPLS:
            raise ValueError(f"spade_impl '{spade_impl}' is not one of {', '.join(SPADE_IMPLS)}")
        self.norm_type = norm_type
        self.kernel_size = kernel_size
        self.hidden_channels = hidden_channels
        self.spade_impl = spade_impl
        conv = lambda filters, name, **kw: keras.layers.Conv2D(  # noqa: E731
            filters, kernel_size, padding="same", name=name, dtype=self.dtype_policy, **kw
        )
        self.param_free_norm = param_free_norm(norm_type, name="param_free_norm", dtype=self.dtype_policy)
        self.mlp_shared = conv(hidden_channels, "mlp_shared", activation="relu")
        self._conv = conv

    def build(self, x_shape, segmap_shape):
        channels = x_shape[-1]
        self.mlp_gamma = self._conv(channels, "mlp_gamma")
        self.mlp_beta = self._conv(channels, "mlp_beta")
        self.param_free_norm.build(x_shape)
        self.mlp_shared.build(segmap_shape)
        hidden_shape = tuple(segmap_shape[:-1]) + (self.hidden_channels,)
        self.mlp_gamma.build(hidden_shape)
        self.mlp_beta.build(hidden_shape)

    def call(self, x, segmap, layout=None, normalized=None, training=None):
        """`layout`: this resolution's `layout(...)`, when the caller shares it between layers;
        `normalized`: x already normalised as this layer's norm would (shared the same way)."""
        height, width = ops.shape(x)[1], ops.shape(x)[2]
        layout = self.layout(segmap, height, width, training) if layout is None else layout

        def dense():
            scale, beta = self.dense_modulation(segmap, height, width)
            return self.normalize(x, normalized, training) * scale + beta

        if layout is None:
            return dense()
        if training:  # static shapes: lookups for mlp_shared, dense gamma and beta
            normalized = self.normalize(x, normalized, training)  # outside the branches: it updates statistics
            scale, beta = ops.cond(layout["one_hot"], lambda: self.lookup_modulation(layout),
                                   lambda: self.dense_modulation(segmap, height, width))
            return normalized * scale + beta
        pays = spade_regions.region_pays(layout, self.mlp_shared.kernel.shape[2], self.hidden_channels, x.shape[-1])
        return ops.cond(ops.logical_and(layout["one_hot"], pays), lambda: self.region_output(x, layout), dense)

    def normalize(self, x, normalized, training):
        return self.param_free_norm(x, training=training) if normalized is None else normalized

    def region_output(self, x, layout):
        """The region path at inference; a batch norm (moving statistics: x * a + b) is folded into the
        gamma/beta tables, so x is modulated in one pass without a normalised copy."""
        affine = None
        if isinstance(self.param_free_norm, ParamFreeBatchNorm):
            affine = self.param_free_norm.inference_affine()
        scale, beta = spade_regions.region_modulation(
            self.mlp_shared, self.mlp_gamma, self.mlp_beta, layout, self.compute_dtype, affine)
        return (x if affine is not None else self.param_free_norm(x, training=False)) * scale + beta

    def layout(self, segmap, height, width, training=None):
        """What the region path needs of the layout at this resolution (`spade_regions.region_layout`),
        the same for every SPADE layer of a residual block; None when this layer runs dense."""
        if self.spade_impl == "dense" or self.kernel_size != 3:
            return None
        return spade_regions.region_layout(nearest_resize(segmap, height, width), static=bool(training))

    def dense_modulation(self, segmap, height, width):
        """(1 + gamma, beta) from the three convolutions."""
        actv = self.mlp_shared(nearest_resize(segmap, height, width))
        return 1 + self.mlp_gamma(actv), self.mlp_beta(actv)

    def lookup_modulation(self, layout):
        actv = spade_regions.shared_lookup(self.mlp_shared, layout["first"], layout["second"], self.compute_dtype)
        return 1 + self.mlp_gamma(actv), self.mlp_beta(actv)

    def compute_output_shape(self, x_shape, segmap_shape):
        return x_shape

    def get_config(self):
        return {
            **super().get_config(),
            "norm_type": self.norm_type,
            "kernel_size": self.kernel_size,
            "hidden_channels": self.hidden_channels,
            "spade_impl": self.spade_impl,
        }
