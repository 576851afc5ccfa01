"""pix2pixHD's global generator, the reference's `--netG pix2pixhd` baseline (Wang et al., 2018)."""

import keras
from keras import ops

from spade_tf.layers import ReflectionPad2D, SpectralNorm, nonspade_norm, parse_norm


def _normed(x, conv_class, filters, kernel_size, norm, name, strides=1):
    """[spectral norm] conv (without bias when a norm follows) then the norm."""
    spectral, kind = parse_norm(norm)
    conv = conv_class(filters, kernel_size, strides=strides, use_bias=kind == "none", name=name)
    x = (SpectralNorm(conv, name=f"{name}_sn") if spectral else conv)(x)
    norm_layer = nonspade_norm(kind, name=f"{name}_norm")
    return x if norm_layer is None else norm_layer(x)


@keras.saving.register_keras_serializable(package="spade_tf")
class ResnetBlock(keras.layers.Layer):
    """x + (reflect pad -> norm(conv) -> ReLU -> reflect pad -> norm(conv))(x)."""

    def __init__(self, norm_G="instance", kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.norm_G, self.kernel_size = norm_G, kernel_size

    def build(self, input_shape):
        dim = input_shape[-1]
        spectral, kind = parse_norm(self.norm_G)
        self.blocks = []
        for i in range(2):
            conv = keras.layers.Conv2D(dim, self.kernel_size, use_bias=kind == "none", name=f"conv_{i}")
            conv = SpectralNorm(conv, name=f"conv_{i}_sn") if spectral else conv
            norm = nonspade_norm(kind, name=f"norm_{i}")
            self.blocks.append((ReflectionPad2D((self.kernel_size - 1) // 2), conv, norm))
        shape = input_shape
        for pad, conv, norm in self.blocks:
            shape = pad.compute_output_shape(shape)
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            if norm is not None:
                norm.build(shape)

    def call(self, x, training=None):
        y = x
        for i, (pad, conv, norm) in enumerate(self.blocks):
            y = conv(pad(y), training=training)
            if norm is not None:
                y = norm(y, training=training)
            if i == 0:
                y = ops.relu(y)
        return x + y

    def get_config(self):
        return {**super().get_config(), "norm_G": self.norm_G, "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="spade_tf")
class Pix2PixHDGenerator(keras.Model):
    """7x7 stem, `resnet_n_downsample` stride-2 convs, `resnet_n_blocks` residual blocks, as many
    transposed convs back up, 7x7 conv to RGB, tanh. Input: the semantic map; any H, W that are
    multiples of 2^resnet_n_downsample.
    """

    def __init__(
        self, semantic_nc, ngf=64, norm_G="instance", resnet_n_downsample=4, resnet_n_blocks=9,
        resnet_kernel_size=3, resnet_initial_kernel_size=7, **kwargs,
    ):
        segmap = keras.Input((None, None, semantic_nc), name="semantics")
        p = resnet_initial_kernel_size // 2
        x = ReflectionPad2D(p)(segmap)
        x = ops.relu(_normed(x, keras.layers.Conv2D, ngf, resnet_initial_kernel_size, norm_G, "stem"))
        mult = 1
        for i in range(resnet_n_downsample):
            x = keras.layers.ZeroPadding2D(1)(x)
            x = ops.relu(_normed(x, keras.layers.Conv2D, ngf * mult * 2, 3, norm_G, f"down_{i}", strides=2))
            mult *= 2
        for i in range(resnet_n_blocks):
            x = ResnetBlock(norm_G, resnet_kernel_size, name=f"block_{i}")(x)
        for i in range(resnet_n_downsample):
            # PyTorch ConvTranspose2d(3, stride 2, padding 1, output_padding 1): the full transposed
            # conv (2n + 1 wide) without its first row and column.
            x = _normed(x, keras.layers.Conv2DTranspose, ngf * mult // 2, 3, norm_G, f"up_{i}", strides=2)
            x = ops.relu(keras.layers.Cropping2D(((1, 0), (1, 0)))(x))
            mult //= 2
        x = ReflectionPad2D(p)(x)
        x = keras.layers.Conv2D(3, resnet_initial_kernel_size, name="conv_img")(x)
        image = keras.layers.Activation("tanh", dtype="float32", name="image")(x)
        super().__init__(inputs=segmap, outputs=image, **kwargs)
        self._config = dict(
            semantic_nc=semantic_nc, ngf=ngf, norm_G=norm_G, resnet_n_downsample=resnet_n_downsample,
            resnet_n_blocks=resnet_n_blocks, resnet_kernel_size=resnet_kernel_size,
            resnet_initial_kernel_size=resnet_initial_kernel_size,
        )
        self.semantic_nc = semantic_nc
        self.use_vae = False
        self.size_multiple = 2**resnet_n_downsample

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self._config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
