import numpy as np

from helpers.model_test_base import run_model_test
from spade_tf.config import load_config
from spade_tf.models import Pix2PixHDGenerator, build_generator


def reference_parameter_count(nc, ngf, n_down, n_blocks, k=3, k0=7):
    """pix2pixHD's global generator with instance norm (no conv bias before a norm)."""
    total = k0 * k0 * nc * ngf
    mult = 1
    for _ in range(n_down):
        total += 9 * ngf * mult * ngf * mult * 2
        mult *= 2
    total += n_blocks * 2 * k * k * (ngf * mult) ** 2
    for _ in range(n_down):
        total += 9 * ngf * mult * ngf * mult // 2
        mult //= 2
    return total + k0 * k0 * ngf * 3 + 3


def test_structure_and_size():
    g = Pix2PixHDGenerator(6, ngf=4, resnet_n_downsample=2, resnet_n_blocks=2)
    assert g(np.zeros((1, 32, 48, 6), "float32")).shape == (1, 32, 48, 3)
    assert sum(int(np.prod(w.shape)) for w in g.trainable_weights) == reference_parameter_count(6, 4, 2, 2)


def test_factory_uses_instance_norm_with_a_spade_norm_string():
    cfg = load_config("facades", ["netG=pix2pixhd", "ngf=4", "resnet_n_blocks=1", "resnet_n_downsample=2"])
    g = build_generator(cfg)
    assert g.get_config()["norm_G"] == "instance"


def test_pix2pixhd_saves_reloads_and_trains(tmp_path):
    g = Pix2PixHDGenerator(3, ngf=4, resnet_n_downsample=2, resnet_n_blocks=1)
    run_model_test(g, np.random.default_rng(0).random((2, 16, 16, 3)).astype("float32"), tmp_path)
