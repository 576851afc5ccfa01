"""Explicit padding, so that convolutions pad like PyTorch's (symmetric) rather than TF's "same"."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="spade_tf")
class SymmetricPad2D(keras.layers.Layer):
    """Pads H and W by `pad` on every side with `mode` "constant" (zeros) or "reflect"."""

    def __init__(self, pad, mode="constant", **kwargs):
        super().__init__(**kwargs)
        self.pad = pad
        self.mode = mode

    def call(self, x):
        p = self.pad
        return ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode=self.mode)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        grow = lambda n: None if n is None else n + 2 * self.pad  # noqa: E731
        return (b, grow(h), grow(w), c)

    def get_config(self):
        return {**super().get_config(), "pad": self.pad, "mode": self.mode}


def ReflectionPad2D(pad, **kwargs):
    """PyTorch's nn.ReflectionPad2d."""
    return SymmetricPad2D(pad, mode="reflect", **kwargs)
