"""Tests for the adversarial, feature-matching and KL losses (spade_tf/losses)."""

import numpy as np
import pytest
import tensorflow as tf

from spade_tf.config import CHOICES
from spade_tf.losses import (
    REDUCTION, discriminator_gan_loss, feature_matching_loss, generator_gan_loss, kld_loss,
    replica_loss,
)

BATCH = 3


def _d_outputs(rng, shift=0.0, batch=BATCH):
    """A 2-scale discriminator output: per scale two intermediate features and 1-channel logits."""
    scales = []
    for size in (8, 4):
        scales.append([
            rng.normal(size=(batch, size, size, 5)).astype(np.float32),
            rng.normal(size=(batch, size // 2, size // 2, 7)).astype(np.float32),
            (rng.normal(size=(batch, size // 2, size // 2, 1)) + shift).astype(np.float32),
        ])
    return scales


# ---- NumPy versions of the reference's formulas, on a whole batch (float64) -------------------

def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _bce(x, target):
    return -np.mean(target * np.log(_sigmoid(x)) + (1 - target) * np.log(1 - _sigmoid(x)))


def _np_gan(logits, gan_mode, target_is_real, for_discriminator):
    x = logits.astype(np.float64)
    if gan_mode == "ls":
        return np.mean((x - (1.0 if target_is_real else 0.0)) ** 2)
    if gan_mode == "original":
        return _bce(x, 1.0 if target_is_real else 0.0)
    if gan_mode == "w":
        return -np.mean(x) if target_is_real else np.mean(x)
    if not for_discriminator:  # hinge, generator
        return -np.mean(x)
    return -np.mean(np.minimum(x - 1, 0)) if target_is_real else -np.mean(np.minimum(-x - 1, 0))


def _np_multiscale(outputs, gan_mode, target_is_real, for_discriminator):
    return np.mean([_np_gan(scale[-1], gan_mode, target_is_real, for_discriminator) for scale in outputs])


def _example(outputs, b):
    return [[f[b:b + 1] for f in scale] for scale in outputs]


@pytest.mark.parametrize("gan_mode", CHOICES["train.gan_mode"])
def test_gan_losses_match_numpy_per_example_and_over_the_batch(gan_mode):
    rng = np.random.default_rng(0)
    fake, real = _d_outputs(rng), _d_outputs(rng, shift=0.5)
    g = generator_gan_loss(fake, gan_mode)
    d_fake, d_real = discriminator_gan_loss(fake, real, gan_mode)
    for loss in (g, d_fake, d_real):
        assert loss.shape == (BATCH,) and loss.dtype == tf.float32
    for b in range(BATCH):
        np.testing.assert_allclose(g[b], _np_multiscale(_example(fake, b), gan_mode, True, False), rtol=1e-5)
        np.testing.assert_allclose(d_fake[b], _np_multiscale(_example(fake, b), gan_mode, False, True), rtol=1e-5)
        np.testing.assert_allclose(d_real[b], _np_multiscale(_example(real, b), gan_mode, True, True), rtol=1e-5)
    # averaged over the batch, the per-example values give the reference's batch loss
    np.testing.assert_allclose(np.mean(g), _np_multiscale(fake, gan_mode, True, False), rtol=1e-5)
    np.testing.assert_allclose(np.mean(d_fake), _np_multiscale(fake, gan_mode, False, True), rtol=1e-5)
    np.testing.assert_allclose(np.mean(d_real), _np_multiscale(real, gan_mode, True, True), rtol=1e-5)


@pytest.mark.parametrize("gan_mode", CHOICES["train.gan_mode"])
def test_gan_losses_use_only_each_scales_last_output(gan_mode):
    rng = np.random.default_rng(1)
    fake, real = _d_outputs(rng), _d_outputs(rng)
    other_fake = [[f + 3.0 for f in scale[:-1]] + [scale[-1]] for scale in fake]
    other_real = [[f - 3.0 for f in scale[:-1]] + [scale[-1]] for scale in real]
    np.testing.assert_array_equal(generator_gan_loss(fake, gan_mode), generator_gan_loss(other_fake, gan_mode))
    d_losses = discriminator_gan_loss(fake, real, gan_mode)
    for a, b in zip(d_losses, discriminator_gan_loss(other_fake, other_real, gan_mode)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("gan_mode", CHOICES["train.gan_mode"])
def test_gan_loss_directions(gan_mode):
    """G's loss falls as D(fake) rises; D's fake term rises with D(fake), its real term falls as D(real) rises.

    Logits below 1 for the terms aiming at 1 and above 0 for the one aiming at 0 (ls's targets).
    """
    rng = np.random.default_rng(2)
    shifted = lambda outputs: [[f + 0.25 for f in scale] for scale in outputs]  # noqa: E731
    below_one = [[np.clip(f, -3, 0.5) for f in scale] for scale in _d_outputs(rng)]
    above_zero = [[np.abs(f) for f in scale] for scale in _d_outputs(rng)]
    assert np.all(generator_gan_loss(shifted(below_one), gan_mode) < generator_gan_loss(below_one, gan_mode))
    _, d_real_low = discriminator_gan_loss(above_zero, below_one, gan_mode)
    _, d_real_high = discriminator_gan_loss(above_zero, shifted(below_one), gan_mode)
    assert np.all(d_real_high < d_real_low)
    d_fake_low, _ = discriminator_gan_loss(above_zero, below_one, gan_mode)
    d_fake_high, _ = discriminator_gan_loss(shifted(above_zero), below_one, gan_mode)
    assert np.all(d_fake_high > d_fake_low)


def test_hinge_margins():
    rng = np.random.default_rng(3)
    outputs = _d_outputs(rng)
    confident_real = [[*s[:-1], 1.0 + np.abs(s[-1])] for s in outputs]  # all >= 1
    confident_fake = [[*s[:-1], -1.0 - np.abs(s[-1])] for s in outputs]  # all <= -1
    d_fake, d_real = discriminator_gan_loss(confident_fake, confident_real, "hinge")
    np.testing.assert_array_equal(d_fake, np.zeros(BATCH))
    np.testing.assert_array_equal(d_real, np.zeros(BATCH))
    d_fake, d_real = discriminator_gan_loss(confident_real, confident_fake, "hinge")  # swapped: >= 2 each
    assert np.all(np.asarray(d_fake) >= 2) and np.all(np.asarray(d_real) >= 2)


def test_gan_loss_errors():
    rng = np.random.default_rng(4)
    outputs = _d_outputs(rng)
    with pytest.raises(ValueError, match=r"unknown gan_mode 'lsgan'; expected one of hinge, ls, original, w"):
        generator_gan_loss(outputs, "lsgan")
    with pytest.raises(ValueError, match=r"list over scales of non-empty lists.*wrap"):
        generator_gan_loss(outputs[0], "hinge")  # one NLayerDiscriminator's flat list of features
    with pytest.raises(ValueError, match=r"list over scales"):
        discriminator_gan_loss(outputs, [], "hinge")
    with pytest.raises(ValueError, match=r"2 scales for fake but 1 for real"):
        discriminator_gan_loss(outputs, outputs[:1], "hinge")


def test_gan_losses_compute_in_float32_from_bfloat16():
    rng = np.random.default_rng(5)
    fake32 = _d_outputs(rng)
    fake16 = [[tf.cast(f, tf.bfloat16) for f in scale] for scale in fake32]
    loss = generator_gan_loss(fake16, "original")
    assert loss.dtype == tf.float32
    np.testing.assert_allclose(loss, generator_gan_loss(fake32, "original"), rtol=2e-2)


# ---- feature matching -------------------------------------------------------------------------

def _np_feature_matching(fake, real, lambda_feat):
    num_d = len(fake)
    per_example = np.zeros(fake[0][0].shape[0])
    for fake_scale, real_scale in zip(fake, real):
        for f, r in list(zip(fake_scale, real_scale))[:-1]:
            per_example += np.abs(f - r).reshape(len(f), -1).mean(axis=1) * lambda_feat / num_d
    return per_example


def test_feature_matching_matches_numpy_and_ignores_the_logits():
    rng = np.random.default_rng(6)
    fake, real = _d_outputs(rng), _d_outputs(rng)
    loss = feature_matching_loss(fake, real, 10.0)
    assert loss.shape == (BATCH,) and loss.dtype == tf.float32
    np.testing.assert_allclose(loss, _np_feature_matching(fake, real, 10.0), rtol=1e-5)
    other = [[*scale[:-1], scale[-1] + 100.0] for scale in fake]
    np.testing.assert_array_equal(feature_matching_loss(other, real, 10.0), loss)
    np.testing.assert_array_equal(feature_matching_loss(fake, fake, 10.0), np.zeros(BATCH))


def test_feature_matching_stops_the_gradient_into_real():
    rng = np.random.default_rng(7)
    fake = [[tf.constant(f) for f in scale] for scale in _d_outputs(rng)]
    real = [[tf.constant(f) for f in scale] for scale in _d_outputs(rng)]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([fake, real])
        loss = tf.reduce_sum(feature_matching_loss(fake, real, 10.0))
    grads_real = tape.gradient(loss, real)
    grads_fake = tape.gradient(loss, fake)
    assert all(g is None or not np.any(g) for scale in grads_real for g in scale)
    for scale in grads_fake:
        assert all(g is not None and np.any(g) for g in scale[:-1])
        assert scale[-1] is None or not np.any(scale[-1])  # the logits take no part


def test_feature_matching_errors():
    rng = np.random.default_rng(8)
    fake, real = _d_outputs(rng), _d_outputs(rng)
    with pytest.raises(ValueError, match=r"differ in structure"):
        feature_matching_loss(fake, [real[0], real[1][1:]], 10.0)
    with pytest.raises(ValueError, match=r"no intermediate features"):
        feature_matching_loss([[s[-1]] for s in fake], [[s[-1]] for s in real], 10.0)


# ---- KL divergence ----------------------------------------------------------------------------

def test_kld_is_zero_at_the_prior_and_matches_the_closed_form():
    np.testing.assert_array_equal(kld_loss(np.zeros((2, 256), np.float32), np.zeros((2, 256), np.float32), 0.05),
                                  np.zeros(2))
    rng = np.random.default_rng(9)
    mu = rng.normal(size=(4, 16)).astype(np.float32)
    logvar = rng.normal(scale=0.5, size=(4, 16)).astype(np.float32)
    loss = kld_loss(mu, logvar, 0.05)
    assert loss.shape == (4,) and loss.dtype == tf.float32
    # KL(N(mu, s^2) || N(0, 1)) = log(1 / s) + (s^2 + mu^2) / 2 - 1/2 per dimension
    s = np.exp(0.5 * logvar.astype(np.float64))
    expected = np.sum(np.log(1 / s) + (s ** 2 + mu.astype(np.float64) ** 2) / 2 - 0.5, axis=1) * 0.05
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert np.all(expected > 0)
    with pytest.raises(ValueError, match=r"mu \(4, 16\) and logvar \(4, 8\)"):
        kld_loss(mu, logvar[:, :8], 0.05)


# ---- reductions -------------------------------------------------------------------------------

def test_replica_losses_sum_to_the_reference_reductions():
    """Two replicas of 2 examples each, global batch 4: summed shares give the reference's loss."""
    rng = np.random.default_rng(10)
    mu = rng.normal(size=(4, 8)).astype(np.float32)
    logvar = rng.normal(size=(4, 8)).astype(np.float32)
    fake = _d_outputs(rng, batch=4)
    reference_kld = -0.5 * np.sum(1 + logvar - mu ** 2 - np.exp(logvar)) * 0.05  # summed over the batch too
    reference_g = _np_multiscale(fake, "hinge", True, False)  # a mean over the batch
    shares = {"kld": 0.0, "gan": 0.0}
    for part in (slice(0, 2), slice(2, 4)):
        shares["kld"] += replica_loss("kld", kld_loss(mu[part], logvar[part], 0.05), 4)
        fake_part = [[f[part] for f in scale] for scale in fake]
        shares["gan"] += replica_loss("gan", generator_gan_loss(fake_part, "hinge"), 4)
    np.testing.assert_allclose(shares["kld"], reference_kld, rtol=1e-5)
    np.testing.assert_allclose(shares["gan"], reference_g, rtol=1e-5)
    per_example = generator_gan_loss(fake, "hinge")
    np.testing.assert_allclose(replica_loss("gan", per_example, 4),
                               tf.nn.compute_average_loss(per_example, global_batch_size=4), rtol=1e-6)
    assert REDUCTION == {"gan": "mean", "feature_matching": "mean", "vgg": "mean", "kld": "sum"}
    with pytest.raises(ValueError, match=r"unknown loss 'KLD'; expected one of gan, feature_matching, vgg, kld"):
        replica_loss("KLD", per_example, 4)
