import numpy as np
import pytest

from helpers.model_test_base import run_model_test
from spade_tf.models import SPADEGenerator, image_size, latent_size


def seg(b, h, w, c, seed=0):
    return np.random.default_rng(seed).random((b, h, w, c)).astype("float32")


@pytest.mark.parametrize("depth, n", [("normal", 5), ("more", 6), ("most", 7)])
def test_every_upsampling_depth(depth, n):
    g = SPADEGenerator(4, ngf=4, num_upsampling_layers=depth, crop_size=2**n)
    assert g.size_multiple == 2**n
    y = np.array(g(seg(1, 2**n, 2**n, 4)))
    assert y.shape == (1, 2**n, 2**n, 3) and np.abs(y).max() <= 1
    names = {layer.name for layer in g.layers}
    assert ("up_4" in names) == (depth == "most")


def test_latent_and_image_size_follow_the_reference():
    assert latent_size(512, 2.0, "more") == (4, 8) and image_size(512, 2.0, "more") == (256, 512)
    assert latent_size(256, 1.0, "normal") == (8, 8)
    assert image_size(100, 1.0, "normal") == (96, 96)  # crop 100: sw = 3
    with pytest.raises(ValueError, match="too small"):
        latent_size(16, 1.0, "normal")
    with pytest.raises(ValueError, match="not one of normal, more, most"):
        latent_size(256, 1.0, "many")


def test_fully_convolutional_at_the_built_aspect_ratio():
    g = SPADEGenerator(3, ngf=4, crop_size=64, aspect_ratio=2.0)  # 32x64
    assert g.image_size == (32, 64)
    assert g(seg(1, 32, 64, 3)).shape == (1, 32, 64, 3)
    assert g(seg(1, 64, 128, 3)).shape == (1, 64, 128, 3)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 48, 64, 3), "48x64 is not a multiple of 32"),
        ((1, 64, 64, 3), "does not have the aspect ratio 2.0"),
        ((1, 32, 64, 5), r"semantic map \[batch, H, W, 3\].*\(1, 32, 64, 5\)"),
        ((32, 64, 3), r"\[batch, H, W, 3\]"),
    ],
)
def test_bad_layouts_are_clear_errors(shape, message):
    g = SPADEGenerator(3, ngf=4, crop_size=64, aspect_ratio=2.0)
    with pytest.raises(ValueError, match=message):
        g(np.zeros(shape, "float32"))


def test_vae_generator_takes_z_and_has_a_fixed_size():
    g = SPADEGenerator(3, ngf=4, crop_size=64, use_vae=True)
    z = np.random.default_rng(0).normal(size=(2, 256)).astype("float32")
    y1 = np.array(g({"semantics": seg(2, 64, 64, 3), "z": z}))
    y2 = np.array(g({"semantics": seg(2, 64, 64, 3), "z": -z}))
    assert y1.shape == (2, 64, 64, 3) and not np.allclose(y1, y2)
    with pytest.raises(ValueError, match="produces only 64x64"):
        g({"semantics": seg(1, 128, 128, 3), "z": z[:1]})
    with pytest.raises(ValueError, match="takes a dict"):
        g(seg(1, 64, 64, 3))
    with pytest.raises(ValueError, match=r"z must be \[batch, 256\]"):
        g({"semantics": seg(1, 64, 64, 3), "z": z[:1, :8]})


@pytest.mark.parametrize("use_vae", [False, True])
def test_generator_saves_reloads_and_trains(use_vae, tmp_path):
    g = SPADEGenerator(3, ngf=4, crop_size=32, use_vae=use_vae)
    x = seg(2, 32, 32, 3)
    z = np.random.default_rng(1).normal(size=(2, 256)).astype("float32")
    inputs = {"semantics": x, "z": z} if use_vae else x
    run_model_test(g, inputs, tmp_path)
