"""The reference's optimisation: Adam with TTUR, a constant learning rate, then a linear decay to zero.

The reference steps its learning rate once per epoch; here it is a function of the training step
(the checkpointed `step` variable), so a resumed run continues the same schedule:
lr(step) = lr for step < niter * steps_per_epoch, then falls linearly to 0 at
(niter + niter_decay) * steps_per_epoch.
"""

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AdamSettings:
    """Learning rates and betas of the generator's and the discriminator's Adam."""

    g_lr: float
    d_lr: float
    beta_1: float
    beta_2: float


def adam_settings(train_cfg) -> AdamSettings:
    """TTUR (default): G lr / 2, D lr * 2, betas (beta1, beta2) = (0, 0.9); no_TTUR: both lr, betas (0.5, 0.999)."""
    if train_cfg.no_TTUR:
        return AdamSettings(train_cfg.lr, train_cfg.lr, 0.5, 0.999)
    return AdamSettings(train_cfg.lr / 2, train_cfg.lr * 2, train_cfg.beta1, train_cfg.beta2)


class LinearDecay:
    """`initial_lr` for `constant_steps` steps, then linearly to 0 over `decay_steps` steps."""

    def __init__(self, initial_lr: float, constant_steps: int, decay_steps: int):
        if constant_steps < 0 or decay_steps < 0:
            raise ValueError(f"schedule steps must be >= 0, got constant {constant_steps}, decay {decay_steps}")
        self.initial_lr = float(initial_lr)
        self.constant_steps = int(constant_steps)
        self.decay_steps = int(decay_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        if self.decay_steps == 0:
            return tf.constant(self.initial_lr, tf.float32)
        remaining = 1.0 - (step - self.constant_steps) / self.decay_steps
        return self.initial_lr * tf.clip_by_value(remaining, 0.0, 1.0)


def schedules(train_cfg, steps_per_epoch: int):
    """(generator schedule, discriminator schedule) from niter / niter_decay epochs of `steps_per_epoch`."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    adam = adam_settings(train_cfg)
    constant, decay = train_cfg.niter * steps_per_epoch, train_cfg.niter_decay * steps_per_epoch
    return LinearDecay(adam.g_lr, constant, decay), LinearDecay(adam.d_lr, constant, decay)
