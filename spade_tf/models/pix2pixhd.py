"""pix2pixHD's global generator, the reference's `--netG pix2pixhd` baseline (Wang et al., 2018)."""

import keras
from keras import ops

from spade_tf.layers import ConvNorm, ReflectionPad2D, conv_norm
from spade_tf.models.network import Network, policy


def _normed(x, filters, kernel_size, norm, name, dtype, strides=1, transpose=False):
    """[spectral norm] conv `name` (without bias when a norm follows) then the norm."""
    names = (name, f"{name}_sn", f"{name}_norm")
    return conv_norm(norm, filters, kernel_size, names, strides=strides, transpose=transpose, dtype=dtype)(x)


@keras.saving.register_keras_serializable(package="spade_tf")
class ResnetBlock(keras.layers.Layer):
    """x + (reflect pad -> norm(conv) -> ReLU -> reflect pad -> norm(conv))(x)."""

    def __init__(self, norm_G="instance", kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.norm_G, self.kernel_size = norm_G, kernel_size

    def build(self, input_shape):
        dim, dtype = input_shape[-1], self.dtype_policy
        self.blocks = []
        for i in range(2):
            conv, norm = conv_norm(self.norm_G, dim, self.kernel_size, (f"conv_{i}", f"conv_{i}_sn", f"norm_{i}"),
                                   dtype=dtype)
            self.blocks.append((ReflectionPad2D((self.kernel_size - 1) // 2, dtype=dtype), conv, norm))
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
            y = ConvNorm(conv, norm)(pad(y), training=training)
            if i == 0:
                y = ops.relu(y)
        return x + y

    def get_config(self):
        return {**super().get_config(), "norm_G": self.norm_G, "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="spade_tf")
class Pix2PixHDGenerator(Network):
    """7x7 stem, `resnet_n_downsample` stride-2 convs, `resnet_n_blocks` residual blocks, as many
    transposed convs back up, 7x7 conv to RGB, tanh. Input: the semantic map; any H, W that are
    multiples of 2^resnet_n_downsample.
    """

    def __init__(
        self, semantic_nc, ngf=64, norm_G="instance", resnet_n_downsample=4, resnet_n_blocks=9,
        resnet_kernel_size=3, resnet_initial_kernel_size=7, dtype=None, **kwargs,
    ):
        config = dict(
            semantic_nc=semantic_nc, ngf=ngf, norm_G=norm_G, resnet_n_downsample=resnet_n_downsample,
            resnet_n_blocks=resnet_n_blocks, resnet_kernel_size=resnet_kernel_size,
            resnet_initial_kernel_size=resnet_initial_kernel_size,
        )
        dtype = policy(dtype)
        segmap = keras.Input((None, None, semantic_nc), name="semantics")
        p = resnet_initial_kernel_size // 2
        x = ReflectionPad2D(p, dtype=dtype)(segmap)
        x = ops.relu(_normed(x, ngf, resnet_initial_kernel_size, norm_G, "stem", dtype))
        mult = 1
        for i in range(resnet_n_downsample):
            x = keras.layers.ZeroPadding2D(1, dtype=dtype)(x)
            x = ops.relu(_normed(x, ngf * mult * 2, 3, norm_G, f"down_{i}", dtype, strides=2))
            mult *= 2
        for i in range(resnet_n_blocks):
            x = ResnetBlock(norm_G, resnet_kernel_size, name=f"block_{i}", dtype=dtype)(x)
        for i in range(resnet_n_downsample):
            # PyTorch ConvTranspose2d(3, stride 2, padding 1, output_padding 1): the full transposed
            # conv (2n + 1 wide) without its first row and column.
            x = _normed(x, ngf * mult // 2, 3, norm_G, f"up_{i}", dtype, strides=2, transpose=True)
            x = ops.relu(keras.layers.Cropping2D(((1, 0), (1, 0)), dtype=dtype)(x))
            mult //= 2
        x = ReflectionPad2D(p, dtype=dtype)(x)
        x = keras.layers.Conv2D(3, resnet_initial_kernel_size, name="conv_img", dtype=dtype)(x)
        image = keras.layers.Activation("tanh", dtype="float32", name="image")(x)
        super().__init__(segmap, image, config, dtype, **kwargs)
        self.semantic_nc = semantic_nc
        self.use_vae = False
        self.size_multiple = 2**resnet_n_downsample
