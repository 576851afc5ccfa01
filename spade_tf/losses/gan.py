"""Adversarial losses (the reference's `GANLoss`): hinge, least squares, original (BCE), Wasserstein.

Each scale's logits (the last output of that scale) give a per-example mean over their elements;
the scales are then averaged, as the reference does. Computed in float32 whatever the inputs' dtype.
"""

from keras import ops

# Element-wise terms per mode (the modes a config may name are `spade_tf.config.CHOICES["train.gan_mode"]`): (generator on fake logits, discriminator on real, discriminator on fake).
_TERMS = {
    "hinge": (lambda f: -f, lambda r: ops.relu(1.0 - r), lambda f: ops.relu(1.0 + f)),
    "ls": (lambda f: ops.square(f - 1.0), lambda r: ops.square(r - 1.0), lambda f: ops.square(f)),
    # binary cross-entropy with logits: target 1 -> softplus(-x), target 0 -> softplus(x)
    "original": (lambda f: ops.softplus(-f), lambda r: ops.softplus(-r), lambda f: ops.softplus(f)),
    "w": (lambda f: -f, lambda r: -r, lambda f: f),
}


def per_example_mean(x):
    """Mean over every axis but the first, in float32: [batch, ...] -> [batch]."""
    x = ops.cast(x, "float32")
    return ops.mean(x, axis=tuple(range(1, len(x.shape))))


def check_outputs(outputs, what):
    """Checks that `outputs` is the discriminator's output: a list over scales of lists of features."""
    if not (isinstance(outputs, (list, tuple)) and outputs
            and all(isinstance(scale, (list, tuple)) and scale for scale in outputs)):
        got = type(outputs).__name__
        if isinstance(outputs, (list, tuple)) and outputs:
            got = f"{got} of {', '.join(sorted({type(s).__name__ for s in outputs}))}"
        raise ValueError(
            f"{what}: expected the discriminator's output, a non-empty list over scales of non-empty "
            f"lists of features (the last of each being that scale's logits); got {got}. A single "
            "NLayerDiscriminator's list of features must be wrapped as [features]")


def _mode_terms(gan_mode):
    if gan_mode not in _TERMS:
        raise ValueError(f"unknown gan_mode {gan_mode!r}; expected one of {', '.join(_TERMS)}")
    return _TERMS[gan_mode]


def _scale_average(term, outputs):
    """Averages term(logits) per example over the scales' logits: -> [batch]."""
    losses = [per_example_mean(term(ops.cast(scale[-1], "float32"))) for scale in outputs]
    return ops.sum(ops.stack(losses), axis=0) / len(losses)


def generator_gan_loss(fake_outputs, gan_mode):
    """The generator's adversarial loss on D(fake), per example [batch]."""
    g_term, _, _ = _mode_terms(gan_mode)
    check_outputs(fake_outputs, "generator_gan_loss fake_outputs")
    return _scale_average(g_term, fake_outputs)


def discriminator_gan_loss(fake_outputs, real_outputs, gan_mode):
    """The discriminator's adversarial losses (d_fake, d_real), each per example [batch].

    The reference logs them separately (D_Fake, D_real) and trains on their sum.
    """
    _, real_term, fake_term = _mode_terms(gan_mode)
    check_outputs(fake_outputs, "discriminator_gan_loss fake_outputs")
    check_outputs(real_outputs, "discriminator_gan_loss real_outputs")
    if len(fake_outputs) != len(real_outputs):
        raise ValueError(f"discriminator_gan_loss: {len(fake_outputs)} scales for fake but "
                         f"{len(real_outputs)} for real; both must come from the same discriminator")
    return _scale_average(fake_term, fake_outputs), _scale_average(real_term, real_outputs)
