"""The VAE style encoder (reference `ConvEncoder`) and the reparameterisation trick."""

import keras
from keras import ops

from spade_tf.layers import LeakyReLU, SymmetricPad2D, conv_norm
from spade_tf.models.network import Network, policy

Z_DIM = 256  # the reference hard-codes its linear heads to 256 outputs


@keras.saving.register_keras_serializable(package="spade_tf")
class ConvEncoder(Network):
    """Image in [-1, 1] -> (mu, logvar), each [batch, 256].

    The image is resized (bilinear, half-pixel) to 256x256, then six stride-2 3x3 convs of widths
    1, 2, 4, 8, 8, 8 x ngf with leaky ReLU(0.2) between them and after the last, then two linear
    heads. This is the reference's runnable path for every crop size (its five-layer variant for
    crops below 256 does not run).
    """

    def __init__(self, ngf=64, norm_E="spectralinstance", dtype=None, **kwargs):
        config = dict(ngf=ngf, norm_E=norm_E)
        dtype = policy(dtype)
        image = keras.Input((None, None, 3), name="image")
        x = keras.layers.Resizing(256, 256, interpolation="bilinear", antialias=False, name="resize", dtype=dtype)(image)
        for i, mult in enumerate((1, 2, 4, 8, 8, 8)):
            name = f"layer{i + 1}"
            if i:
                x = LeakyReLU(0.2, dtype=dtype)(x)
            x = SymmetricPad2D(1, name=f"{name}_pad", dtype=dtype)(x)
            names = (f"{name}_conv", f"{name}_sn", f"{name}_norm")
            x = conv_norm(norm_E, mult * ngf, 3, names, strides=2, dtype=dtype)(x)
        x = LeakyReLU(0.2, dtype=dtype)(x)
        x = keras.layers.Permute((3, 1, 2), dtype=dtype)(x)  # flatten channel-major, as the reference's NCHW view
        x = keras.layers.Flatten(dtype=dtype)(x)
        mu = keras.layers.Dense(Z_DIM, dtype="float32", name="fc_mu")(x)
        logvar = keras.layers.Dense(Z_DIM, dtype="float32", name="fc_var")(x)
        super().__init__(image, [mu, logvar], config, dtype, **kwargs)
        self.ngf, self.norm_E = ngf, norm_E

    def __call__(self, inputs, *args, **kwargs):
        shape = tuple(inputs.shape)
        if len(shape) != 4 or shape[-1] not in (None, 3):
            raise ValueError(f"the encoder expects RGB images [batch, H, W, 3] in [-1, 1]; got shape {shape}")
        return super().__call__(inputs, *args, **kwargs)


def reparameterize(mu, logvar, eps):
    """z = mu + eps * exp(logvar / 2): a draw of N(mu, exp(logvar)) from eps ~ N(0, I).

    The caller draws eps: the trainer per seed, step and replica, the export at serving time.
    """
    return mu + eps * ops.exp(0.5 * logvar)
