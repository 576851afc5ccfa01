import numpy as np
import pytest

from helpers.model_test_base import run_model_test
from spade_tf.models import ConvEncoder, reparameterize


def test_any_image_size_is_resized_to_256_and_heads_have_256_outputs():
    e = ConvEncoder(ngf=4)
    for size in ((64, 64), (128, 256)):
        mu, logvar = e(np.zeros((2, *size, 3), "float32"))
        assert mu.shape == (2, 256) and logvar.shape == (2, 256)
    assert e.get_layer("fc_mu").kernel.shape == (8 * 4 * 4 * 4, 256)


def test_reparameterize_is_mean_plus_scaled_noise():
    mu = np.full((4000, 2), 3.0, "float32")
    logvar = np.full((4000, 2), np.log(4.0), "float32")
    eps = np.random.default_rng(1).standard_normal(mu.shape).astype("float32")
    z = np.array(reparameterize(mu, logvar, eps))
    np.testing.assert_allclose(z, 3.0 + 2.0 * eps, rtol=1e-6)  # the caller's noise, scaled and shifted
    assert z.mean() == pytest.approx(3.0, abs=0.1) and z.std() == pytest.approx(2.0, abs=0.1)


def test_encoder_rejects_non_rgb():
    with pytest.raises(ValueError, match=r"RGB images \[batch, H, W, 3\]"):
        ConvEncoder(ngf=4)(np.zeros((1, 64, 64, 1), "float32"))


def test_encoder_saves_reloads_and_trains(tmp_path):
    run_model_test(ConvEncoder(ngf=4), np.random.default_rng(0).random((2, 64, 64, 3)).astype("float32"), tmp_path)
