"""The SPADE layer: spatially-adaptive (de)normalisation (Park et al., 2019, Sec. 3)."""

import keras
from keras import ops

from spade_tf.layers.normalization import param_free_norm
from spade_tf.layers.resize import nearest_resize


@keras.saving.register_keras_serializable(package="spade_tf")
class SPADE(keras.layers.Layer):
    """norm(x) * (1 + gamma(segmap)) + beta(segmap), gamma and beta predicted per pixel.

    The layout is nearest-resized to the feature map, passed through a shared k x k conv to
    `hidden_channels` with ReLU, then through two k x k convs to gamma and beta.

    Args:
        norm_type: the parameter-free norm, "syncbatch", "batch" or "instance".
        kernel_size: k of the three convolutions.
        hidden_channels: width of the shared conv (128 in the reference, hard-coded there).
    """

    def __init__(self, norm_type="syncbatch", kernel_size=3, hidden_channels=128, **kwargs):
        super().__init__(**kwargs)
        self.norm_type = norm_type
        self.kernel_size = kernel_size
        self.hidden_channels = hidden_channels
        conv = lambda filters, name, **kw: keras.layers.Conv2D(  # noqa: E731
            filters, kernel_size, padding="same", name=name, **kw
        )
        self.param_free_norm = param_free_norm(norm_type, name="param_free_norm")
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

    def call(self, x, segmap, training=None):
        normalized = self.param_free_norm(x, training=training)
        shape = ops.shape(x)
        segmap = nearest_resize(segmap, shape[1], shape[2])
        actv = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)

    def compute_output_shape(self, x_shape, segmap_shape):
        return x_shape

    def get_config(self):
        return {
            **super().get_config(),
            "norm_type": self.norm_type,
            "kernel_size": self.kernel_size,
            "hidden_channels": self.hidden_channels,
        }
