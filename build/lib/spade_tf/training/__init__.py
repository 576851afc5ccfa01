"""Training SPADE: the GAN step under tf.distribute, schedules, checkpoints."""
