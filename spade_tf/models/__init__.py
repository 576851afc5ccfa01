"""SPADE's networks, and factories that build them from a `spade_tf.config.Config`.

`dtype`: the networks' Keras dtype policy, set on each layer (None: the global policy, float32 by
default; "mixed_bfloat16" or "mixed_float16" compute in half precision with float32 variables).
"""

from spade_tf.models.discriminator import MultiscaleDiscriminator, NLayerDiscriminator
from spade_tf.models.encoder import Z_DIM, ConvEncoder, reparameterize
from spade_tf.models.generator import SPADEGenerator, image_size, latent_size
from spade_tf.models.init import init_weights
from spade_tf.models.pix2pixhd import Pix2PixHDGenerator


def build_generator(cfg, seed=0, dtype=None):
    m = cfg.model
    if m.netG == "pix2pixhd":
        if m.use_vae:
            raise ValueError("model.use_vae needs model.netG=spade (the pix2pixHD generator takes no z)")
        norm = m.norm_G if not m.norm_G.startswith(("spade", "spectralspade")) else "instance"
        g = Pix2PixHDGenerator(
            cfg.semantic_nc, m.ngf, norm, m.resnet_n_downsample, m.resnet_n_blocks,
            m.resnet_kernel_size, m.resnet_initial_kernel_size, name="generator", dtype=dtype,
        )
    else:
        if m.use_vae and m.z_dim != Z_DIM:
            raise ValueError(
                f"model.z_dim={m.z_dim} with model.use_vae: the reference's encoder always outputs {Z_DIM} "
                f"values (its heads ignore z_dim), so only z_dim={Z_DIM} is supported"
            )
        g = SPADEGenerator(
            cfg.semantic_nc, m.ngf, m.num_upsampling_layers, m.norm_G, m.use_vae, m.z_dim,
            cfg.data.crop_size, cfg.data.aspect_ratio, spade_impl=m.spade_impl, name="generator", dtype=dtype,
        )
    return init_weights(g, m.init_type, m.init_variance, seed)


def build_discriminator(cfg, seed=1000, dtype=None):
    m = cfg.model
    nc = cfg.semantic_nc + 3
    if m.netD == "n_layer":
        d = NLayerDiscriminator(nc, m.ndf, m.n_layers_D, m.norm_D, name="discriminator", dtype=dtype)
    else:
        d = MultiscaleDiscriminator(nc, m.ndf, m.n_layers_D, m.norm_D, m.num_D, name="discriminator", dtype=dtype)
    return init_weights(d, m.init_type, m.init_variance, seed)


def build_encoder(cfg, seed=2000, dtype=None):
    """The VAE style encoder (its width is ngf, as in the reference), or None without VAE."""
    if not cfg.model.use_vae:
        return None
    e = ConvEncoder(cfg.model.ngf, cfg.model.norm_E, name="encoder", dtype=dtype)
    return init_weights(e, cfg.model.init_type, cfg.model.init_variance, seed)


__all__ = [
    "ConvEncoder",
    "MultiscaleDiscriminator",
    "NLayerDiscriminator",
    "Pix2PixHDGenerator",
    "SPADEGenerator",
    "Z_DIM",
    "build_discriminator",
    "build_encoder",
    "build_generator",
    "image_size",
    "init_weights",
    "latent_size",
    "reparameterize",
]
