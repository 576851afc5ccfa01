import types

import numpy as np
import pytest

from spade_tf.config import load_config
from spade_tf.training.schedule import LinearDecay, adam_settings, schedules


def test_ttur_halves_the_generator_rate_and_doubles_the_discriminators():
    cfg = load_config(None, ["train.lr=0.0002"])
    adam = adam_settings(cfg.train)
    assert (adam.g_lr, adam.d_lr, adam.beta_1, adam.beta_2) == pytest.approx((0.0001, 0.0004, 0.0, 0.9))


def test_no_ttur_uses_the_base_rate_for_both_and_pix2pixhd_betas():
    cfg = load_config(None, ["train.lr=0.0002", "train.no_TTUR=true"])
    adam = adam_settings(cfg.train)
    assert (adam.g_lr, adam.d_lr, adam.beta_1, adam.beta_2) == pytest.approx((0.0002, 0.0002, 0.5, 0.999))


def test_constant_then_linear_decay_to_zero():
    train = types.SimpleNamespace(lr=0.0002, no_TTUR=False, beta1=0.0, beta2=0.9, niter=3, niter_decay=2)
    g, d = schedules(train, steps_per_epoch=10)  # constant for 30 steps, zero at step 50
    lrs = np.array([float(g(s)) for s in (0, 29, 30, 40, 45, 50, 60)])
    np.testing.assert_allclose(lrs, 1e-4 * np.array([1, 1, 1, 0.5, 0.25, 0, 0]), atol=1e-10)
    assert float(d(40)) == pytest.approx(4e-4 * 0.5)


def test_no_decay_epochs_keeps_the_rate():
    schedule = LinearDecay(1e-3, constant_steps=5, decay_steps=0)
    assert float(schedule(10_000)) == pytest.approx(1e-3)


def test_bad_steps_are_refused():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        schedules(load_config(None).train, steps_per_epoch=0)
    with pytest.raises(ValueError, match=">= 0"):
        LinearDecay(1e-3, -1, 10)
