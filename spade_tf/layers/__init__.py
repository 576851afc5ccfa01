"""Keras 3 layers of SPADE (Park et al., 2019), channels last."""

from spade_tf.layers.activation import LeakyReLU, leaky_relu
from spade_tf.layers.normalization import ConvNorm, conv_norm, nonspade_norm, param_free_norm, parse_norm, parse_spade_norm
from spade_tf.layers.padding import ReflectionPad2D, SymmetricPad2D
from spade_tf.layers.resblock import SPADEResBlock
from spade_tf.layers.resize import NearestDownsample, nearest_resize
from spade_tf.layers.spade import SPADE, SPADE_IMPLS
from spade_tf.layers.spade_regions import layout_codes
from spade_tf.layers.spectral_norm import SpectralNorm

__all__ = [
    "ConvNorm",
    "LeakyReLU",
    "leaky_relu",
    "SPADE",
    "SPADE_IMPLS",
    "layout_codes",
    "SPADEResBlock",
    "SpectralNorm",
    "NearestDownsample",
    "ReflectionPad2D",
    "SymmetricPad2D",
    "conv_norm",
    "nearest_resize",
    "nonspade_norm",
    "param_free_norm",
    "parse_norm",
    "parse_spade_norm",
]
