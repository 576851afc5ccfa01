"""The VAE style encoder (reference `ConvEncoder`) and the reparameterisation trick."""

import keras
from keras import ops

from spade_tf.layers import SpectralNorm, SymmetricPad2D, nonspade_norm, parse_norm

Z_DIM = 256  # the reference hard-codes its linear heads to 256 outputs


@keras.saving.register_keras_serializable(package="spade_tf")
class ConvEncoder(keras.Model):
    """Image in [-1, 1] -> (mu, logvar), each [batch, 256].

    The image is resized (bilinear, half-pixel) to 256x256, then six stride-2 3x3 convs of widths
    1, 2, 4, 8, 8, 8 x ngf with leaky ReLU(0.2) between them and after the last, then two linear
    heads. This is the reference's runnable path for every crop size (its five-layer variant for
    crops below 256 does not run).
    """

    def __init__(self, ngf=64, norm_E="spectralinstance", **kwargs):
        spectral, kind = parse_norm(norm_E)
        image = keras.Input((None, None, 3), name="image")
        x = keras.layers.Resizing(256, 256, interpolation="bilinear", antialias=False, name="resize")(image)
        for i, mult in enumerate((1, 2, 4, 8, 8, 8)):
            name = f"layer{i + 1}"
            norm = nonspade_norm(kind, name=f"{name}_norm")
            if i:
                x = keras.layers.LeakyReLU(0.2)(x)
            x = SymmetricPad2D(1, name=f"{name}_pad")(x)
            conv = keras.layers.Conv2D(mult * ngf, 3, strides=2, use_bias=norm is None, name=f"{name}_conv")
            x = (SpectralNorm(conv, name=f"{name}_sn") if spectral else conv)(x)
            if norm is not None:
                x = norm(x)
        x = keras.layers.LeakyReLU(0.2)(x)
        x = keras.layers.Permute((3, 1, 2))(x)  # flatten channel-major, as the reference's NCHW view
        x = keras.layers.Flatten()(x)
        mu = keras.layers.Dense(Z_DIM, dtype="float32", name="fc_mu")(x)
        logvar = keras.layers.Dense(Z_DIM, dtype="float32", name="fc_var")(x)
        super().__init__(inputs=image, outputs=[mu, logvar], **kwargs)
        self.ngf, self.norm_E = ngf, norm_E

    def __call__(self, inputs, *args, **kwargs):
        shape = tuple(inputs.shape)
        if len(shape) != 4 or shape[-1] not in (None, 3):
            raise ValueError(f"the encoder expects RGB images [batch, H, W, 3] in [-1, 1]; got shape {shape}")
        return super().__call__(inputs, *args, **kwargs)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "ngf": self.ngf, "norm_E": self.norm_E}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def reparameterize(mu, logvar, seed=None):
    """z = mu + eps * exp(logvar / 2), eps ~ N(0, I)."""
    eps = keras.random.normal(ops.shape(mu), seed=seed)
    return mu + eps * ops.exp(0.5 * logvar)
