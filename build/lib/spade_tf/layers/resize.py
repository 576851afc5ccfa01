"""Nearest-neighbour resizing with PyTorch's index rule.

`torch.nn.functional.interpolate(mode="nearest")` reads source pixel floor(dst * in / out): for a
downsampling by an integer factor that is the top-left pixel of each block. `tf.image.resize`
uses half-pixel centres and picks a different pixel, so the reference's layout resizing is
reproduced here with two gathers.
"""

import keras
from keras import ops


def _source_index(out_size, in_size):
    return ops.floor_divide(ops.arange(out_size, dtype="int32") * in_size, out_size)


def nearest_resize(images, height, width):
    """Resizes [batch, h, w, c] to [batch, height, width, c] the way PyTorch's nearest mode does."""
    shape = ops.shape(images)
    in_h, in_w = shape[1], shape[2]
    same = isinstance(in_h, int) and isinstance(height, int) and in_h == height
    same = same and isinstance(in_w, int) and isinstance(width, int) and in_w == width
    if same:
        return images
    images = ops.take(images, _source_index(height, in_h), axis=1)
    return ops.take(images, _source_index(width, in_w), axis=2)


@keras.saving.register_keras_serializable(package="spade_tf")
class NearestDownsample(keras.layers.Layer):
    """Downsamples by an integer factor, keeping the top-left pixel of each block (PyTorch nearest)."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, images):
        return images[:, :: self.factor, :: self.factor, :]

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else h // self.factor, None if w is None else w // self.factor, c)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
