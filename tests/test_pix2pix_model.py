"""spade_tf.models.pix2pix_model: the G step's discriminator outputs against the reference's one batch."""

import numpy as np
import pytest
import tensorflow as tf

from helpers import tiny_config
from spade_tf.data import pipeline
from spade_tf.models.pix2pix_model import Pix2PixModel


def _noise(shape, salt):
    return tf.random.stateless_normal(shape, [salt, 0])


@pytest.mark.parametrize("netD, norm_D", [("multiscale", "spectralinstance"), ("n_layer", "spectralinstance"),
                                          ("multiscale", "spectralbatch")])
def test_g_step_discriminates_real_apart_with_the_same_outputs_gradients_and_power_iteration(netD, norm_D):
    model = Pix2PixModel(tiny_config(f"model.netD={netD}", f"model.norm_D={norm_D}"), _noise)
    batch = next(iter(pipeline.build_dataset(model.cfg)))
    semantics, real = model.semantics(batch), batch["image"]
    fake = tf.Variable(model.generate(semantics, real)[0])
    spectral = [w for w in model.discriminator.non_trainable_weights if w.name in ("u", "v")]
    assert spectral
    start = [w.numpy() for w in spectral]
    results = []
    for fn in (model.discriminate, model.discriminate_for_generator):
        for w, value in zip(spectral, start):
            w.assign(value)
        with tf.GradientTape() as tape:
            pred_fake, pred_real = fn(semantics, fake, real)
            loss = sum(tf.reduce_sum(f * r) + tf.reduce_sum(f) for scale_f, scale_r in zip(pred_fake, pred_real)
                       for f, r in zip(scale_f, scale_r))
        results.append((tf.nest.flatten((pred_fake, pred_real)), tape.gradient(loss, fake), [w.numpy() for w in spectral]))
    (outputs, gradient, after), (outputs_apart, gradient_apart, after_apart) = results
    for a, b in zip(outputs, outputs_apart, strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-5)
    scale = np.abs(np.array(gradient)).max()
    assert scale > 0 and np.abs(np.array(gradient) - np.array(gradient_apart)).max() <= 1e-5 * scale
    for a, b, s in zip(after, after_apart, start):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # one power iteration in both
        assert not np.allclose(a, s)
