"""The SPADE generator (Park et al., 2019, Fig. 4 right; reference `SPADEGenerator`)."""

import keras
import numpy as np
from keras import ops

from spade_tf.layers import LeakyReLU, NearestDownsample, SPADEResBlock
from spade_tf.models.network import Network, policy

NUM_UPSAMPLINGS = {"normal": 5, "more": 6, "most": 7}


def num_upsamplings(num_upsampling_layers: str) -> int:
    if num_upsampling_layers not in NUM_UPSAMPLINGS:
        raise ValueError(
            f"num_upsampling_layers '{num_upsampling_layers}' is not one of {', '.join(NUM_UPSAMPLINGS)}"
        )
    return NUM_UPSAMPLINGS[num_upsampling_layers]


def latent_size(crop_size: int, aspect_ratio: float, num_upsampling_layers: str):
    """(sh, sw) as the reference's `compute_latent_vector_size`: sw = crop / 2^n, sh = round(sw / aspect)."""
    n = num_upsamplings(num_upsampling_layers)
    sw = crop_size // 2**n
    sh = round(sw / aspect_ratio)
    if sw < 1 or sh < 1:
        raise ValueError(
            f"crop_size {crop_size} with aspect_ratio {aspect_ratio} is too small for "
            f"num_upsampling_layers '{num_upsampling_layers}' ({n} doublings need crop_size >= {2**n})"
        )
    return sh, sw


def image_size(crop_size: int, aspect_ratio: float, num_upsampling_layers: str):
    """(H, W) of the generator's output at this crop size."""
    sh, sw = latent_size(crop_size, aspect_ratio, num_upsampling_layers)
    f = 2 ** num_upsamplings(num_upsampling_layers)
    return sh * f, sw * f


@keras.saving.register_keras_serializable(package="spade_tf")
class SPADEGenerator(Network):
    """Decoder from a layout (or a style code z) to an image, with SPADE in every residual block.

    Input: the semantic map [batch, H, W, semantic_nc] (see `spade_tf.semantics`), plus
    z [batch, z_dim] when `use_vae`. Output: an RGB image in [-1, 1], [batch, H, W, 3].

    Without VAE the generator is fully convolutional: the layout, nearest-downsampled by
    2^n, is the input of a 3x3 conv; any H, W that are multiples of 2^n with the aspect ratio it
    was built for work. With VAE, z goes through a linear layer to a fixed latent grid, so the
    size is the one given by `crop_size` and `aspect_ratio`.

    Args:
        semantic_nc: channels of the semantic map.
        ngf: base width; the blocks have 16, 16, 16, 8, 4, 2, 1 (and 1/2 for "most") x ngf channels.
        num_upsampling_layers: "normal" (5 doublings), "more" (6) or "most" (7).
        norm_G: the reference's norm string, e.g. "spectralspadesyncbatch3x3".
        use_vae: take z through a linear layer instead of the downsampled layout.
        z_dim: size of z.
        crop_size, aspect_ratio: the reference's size options (width, width / height).
        spade_impl: "dense", or "regions": every SPADE computes its layout branch once per class
            region (`spade_tf.layers.spade_regions`). Same layers, weights, checkpoint structure and
            outputs (to float rounding); a choice of speed, not of model.
        dtype: the layers' dtype policy, e.g. "mixed_bfloat16" (the image is float32 in any case).
    """

    def __init__(
        self,
        semantic_nc,
        ngf=64,
        num_upsampling_layers="normal",
        norm_G="spectralspadesyncbatch3x3",
        use_vae=False,
        z_dim=256,
        crop_size=256,
        aspect_ratio=1.0,
        spade_impl="dense",
        dtype=None,
        **kwargs,
    ):
        config = dict(
            semantic_nc=semantic_nc, ngf=ngf, num_upsampling_layers=num_upsampling_layers, norm_G=norm_G,
            use_vae=use_vae, z_dim=z_dim, crop_size=crop_size, aspect_ratio=aspect_ratio, spade_impl=spade_impl,
        )
        dtype = policy(dtype)
        n = num_upsamplings(num_upsampling_layers)
        sh, sw = latent_size(crop_size, aspect_ratio, num_upsampling_layers)
        nf = ngf
        # === Functional model ===
        if use_vae:
            segmap = keras.Input((sh * 2**n, sw * 2**n, semantic_nc), name="semantics")
            z = keras.Input((z_dim,), name="z")
            inputs = {"semantics": segmap, "z": z}
            x = keras.layers.Dense(16 * nf * sh * sw, name="fc", dtype=dtype)(z)
            # The reference reads the linear layer's output channel-major (NCHW).
            x = keras.layers.Reshape((16 * nf, sh, sw), dtype=dtype)(x)
            x = keras.layers.Permute((2, 3, 1), dtype=dtype)(x)
        else:
            segmap = keras.Input((None, None, semantic_nc), name="semantics")
            inputs = segmap
            x = NearestDownsample(2**n, name="downsample", dtype=dtype)(segmap)
            x = keras.layers.Conv2D(16 * nf, 3, padding="same", name="fc", dtype=dtype)(x)

        def up(x):
            return keras.layers.UpSampling2D(2, interpolation="nearest", dtype=dtype)(x)

        block = lambda filters, name: SPADEResBlock(filters, norm_G, spade_impl, name=name, dtype=dtype)  # noqa: E731
        x = block(16 * nf, "head_0")(x, segmap)
        x = up(x)
        x = block(16 * nf, "G_middle_0")(x, segmap)
        if n >= 6:
            x = up(x)
        x = block(16 * nf, "G_middle_1")(x, segmap)
        for i, mult in enumerate((8, 4, 2, 1)):
            x = block(mult * nf, f"up_{i}")(up(x), segmap)
        if n == 7:
            x = block(nf // 2, "up_4")(up(x), segmap)
        x = LeakyReLU(0.2, dtype=dtype)(x)
        x = keras.layers.Conv2D(3, 3, padding="same", name="conv_img", dtype=dtype)(x)
        image = keras.layers.Activation("tanh", dtype="float32", name="image")(x)
        super().__init__(inputs, image, config, dtype, **kwargs)

        # === Config ===
        self.semantic_nc = semantic_nc
        self.ngf = ngf
        self.num_upsampling_layers = num_upsampling_layers
        self.norm_G = norm_G
        self.use_vae = use_vae
        self.z_dim = z_dim
        self.crop_size = crop_size
        self.aspect_ratio = aspect_ratio
        self.spade_impl = spade_impl
        self.size_multiple = 2**n
        self.latent_size = (sh, sw)

    @property
    def image_size(self):
        return self.latent_size[0] * self.size_multiple, self.latent_size[1] * self.size_multiple

    def check_size(self, height, width):
        """Raises ValueError unless the generator can produce an H x W image."""
        f = self.size_multiple
        if self.use_vae:
            if (height, width) != self.image_size:
                raise ValueError(
                    f"this VAE generator produces only {self.image_size[0]}x{self.image_size[1]} images "
                    f"(its linear layer fixes the size); got a {height}x{width} layout"
                )
            return
        if height % f or width % f:
            raise ValueError(
                f"layout size {height}x{width} is not a multiple of {f} (2^{f.bit_length() - 1} upsamplings); "
                f"e.g. {max(f, height // f * f)}x{max(f, width // f * f)}"
            )
        if round((width // f) / self.aspect_ratio) != height // f:
            raise ValueError(
                f"layout size {height}x{width} (HxW) does not have the aspect ratio {self.aspect_ratio} "
                f"(width / height) this generator was built for; e.g. {self.image_size[0]}x{self.image_size[1]}"
            )

    def __call__(self, inputs, *args, **kwargs):
        # Checked here, before Keras wraps errors raised inside `call` with a dump of the inputs.
        self.check_inputs(inputs)
        if isinstance(inputs, dict):  # Keras refuses a dict mixing NumPy arrays and tensors
            inputs = {k: ops.convert_to_tensor(v) if isinstance(v, np.ndarray) else v for k, v in inputs.items()}
        return super().__call__(inputs, *args, **kwargs)

    def check_inputs(self, inputs):
        """Raises ValueError naming what is wrong with the inputs' structure, rank, channels or size."""
        if self.use_vae and not (isinstance(inputs, dict) and {"semantics", "z"} <= set(inputs)):
            raise ValueError("a VAE generator takes a dict {'semantics': [batch, H, W, C], 'z': [batch, z_dim]}")
        segmap = inputs["semantics"] if isinstance(inputs, dict) else inputs
        shape = tuple(segmap.shape)
        if len(shape) != 4 or (shape[-1] is not None and shape[-1] != self.semantic_nc):
            raise ValueError(
                f"the generator expects a semantic map [batch, H, W, {self.semantic_nc}] "
                f"(see spade_tf.semantics.semantic_input); got shape {shape}"
            )
        if isinstance(shape[1], int) and isinstance(shape[2], int):
            self.check_size(shape[1], shape[2])
        if self.use_vae:
            z_shape = tuple(inputs["z"].shape)
            if len(z_shape) != 2 or z_shape[-1] not in (None, self.z_dim):
                raise ValueError(f"z must be [batch, {self.z_dim}]; got shape {z_shape}")
