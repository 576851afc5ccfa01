"""Weight initialisation as the reference's `BaseNetwork.init_weights`.

Every convolution and linear kernel is drawn from the chosen scheme, every bias set to zero
(batch-norm gammas are N(1, 0.02) by their own initializer). Default: xavier normal, gain 0.02.
"""

import math

import keras
import numpy as np

from spade_tf.layers import SpectralNorm


def kernel_initializer(init_type: str, gain: float, seed=None):
    if init_type == "xavier":  # torch xavier_normal_: N(0, gain^2 * 2 / (fan_in + fan_out)), not truncated
        return keras.initializers.VarianceScaling(gain**2, "fan_avg", "untruncated_normal", seed=seed)
    if init_type == "xavier_uniform":
        return keras.initializers.VarianceScaling(gain**2, "fan_avg", "uniform", seed=seed)
    if init_type == "normal":
        return keras.initializers.RandomNormal(0.0, gain, seed=seed)
    if init_type == "kaiming":  # torch kaiming_normal_(a=0, mode="fan_in"): N(0, 2 / fan_in)
        return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=seed)
    if init_type == "orthogonal":
        return keras.initializers.Orthogonal(gain, seed=seed)
    raise ValueError(
        f"unknown init_type '{init_type}'; expected xavier, xavier_uniform, normal, kaiming, orthogonal or none"
    )


def _kernels(model):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, SpectralNorm):
            continue  # its wrapped conv is visited on its own
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose, keras.layers.Dense)):
            yield layer


def init_weights(model, init_type="xavier", gain=0.02, seed=0):
    """Re-initialises `model`'s conv and linear layers in place; `none` keeps Keras's defaults."""
    if init_type == "none":
        return model
    for i, layer in enumerate(_kernels(model)):
        init = kernel_initializer(init_type, gain, seed=None if seed is None else seed + i)
        kernel = layer.kernel
        if init_type == "orthogonal":  # torch flattens [out, in*k*k]; the shape only matters for orthogonality
            out = kernel.shape[-1]
            flat = np.asarray(init((math.prod(kernel.shape) // out, out)))
            layer.kernel.assign(flat.reshape(kernel.shape))
        else:
            layer.kernel.assign(init(kernel.shape))
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(np.zeros(layer.bias.shape, "float32"))
    return model
