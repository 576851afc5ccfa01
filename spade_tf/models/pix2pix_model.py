"""SPADE's GAN: the networks and their losses, as the reference's `Pix2PixModel` (the loop is the trainer's).

From a batch of the data pipeline: the semantic input (`spade_tf.semantics.semantic_input`), the
fake image (from the layout, and for VAE models a style code z = reparameterize(E(real))), the
discriminator on fake and real in one batch, and the loss terms of both players, each this
replica's share of the loss over the global batch (`losses.replica_loss`). Optimizers, strategy,
XLA, precision, checkpoints and logging belong to `spade_tf.training.trainer`.

The noise of the reparameterisation comes from the caller (`noise(shape, salt)`): the trainer keys
it by seed, step and replica; `salt` tells apart the draws of one step (G step, D step, samples).
"""

import tensorflow as tf

from spade_tf import losses
from spade_tf.layers import parse_norm
from spade_tf.models import build_discriminator, build_encoder, build_generator
from spade_tf.models.encoder import reparameterize
from spade_tf.semantics import semantic_input

GENERATOR_LOSSES = ("GAN", "GAN_Feat", "VGG", "KLD")
DISCRIMINATOR_LOSSES = ("D_Fake", "D_real")


class Pix2PixModel:
    """The generator, discriminator, encoder (VAE models) and VGG loss built from `cfg`.

    `noise(shape, salt)`: N(0, I) for z. `dtype`: the networks' Keras dtype policy (None: the global one).
    """

    def __init__(self, cfg, noise, dtype=None):
        self.cfg = cfg
        self.noise = noise
        self.generator = build_generator(cfg, dtype=dtype)
        self.discriminator = build_discriminator(cfg, dtype=dtype)
        self.encoder = build_encoder(cfg, dtype=dtype)
        vgg = losses.build_vgg(cfg, dtype=dtype)
        self.vgg_loss = losses.VGGLoss(vgg, cfg.train.lambda_vgg, cfg.train.low_memory) if vgg is not None else None

    def generator_variables(self):
        """What the generator's optimizer updates: G, and E for VAE models."""
        variables = list(self.generator.trainable_variables)
        if self.encoder is not None:
            variables += self.encoder.trainable_variables
        return variables

    def semantics(self, batch):
        d = self.cfg.data
        return semantic_input(
            batch["label"], batch.get("instance"), label_nc=d.label_nc,
            contain_dontcare_label=d.contain_dontcare_label, use_instance=not d.no_instance,
        )

    def generate(self, semantics, real, training=True, generator=None, salt=0):
        """(fake, mu, logvar); mu and logvar are None without VAE (z from the encoder on `real`)."""
        generator = generator or self.generator
        if self.encoder is None:
            return generator(semantics, training=training), None, None
        mu, logvar = self.encoder(real, training=training)
        z = reparameterize(mu, logvar, self.noise(tf.shape(mu), salt))
        return generator({"semantics": semantics, "z": z}, training=training), mu, logvar

    def discriminate(self, semantics, fake, real):
        """D on fake and real in one batch, as the reference; -> (fake outputs, real outputs) per scale."""
        pair = tf.concat([tf.concat([semantics, fake], -1), tf.concat([semantics, real], -1)], axis=0)
        outputs = self._scales(pair, training=True)
        halves = [[tf.split(f, 2, axis=0) for f in scale] for scale in outputs]
        return [[f for f, _ in scale] for scale in halves], [[r for _, r in scale] for scale in halves]

    def discriminate_for_generator(self, semantics, fake, real):
        """The G step's D outputs. Where D treats every example on its own (instance norm or none, the
        reference's default), real goes through D apart, after fake and without training-mode updates:
        its outputs only feed feature matching, as constants, so the backward pass then holds fake's
        half alone (with both halves, D's first-layer input gradient was 310 MiB of the step's peak at
        ADE20K batch 2). Spectral norm's one power iteration of the step happens in the fake pass and
        the real pass reads the same u and v, so both see one sigma, as in the reference's one batch."""
        if parse_norm(self.cfg.model.norm_D)[1] not in ("instance", "none"):
            return self.discriminate(semantics, fake, real)
        pred_fake = self._scales(tf.concat([semantics, fake], -1), training=True)
        pred_real = self._scales(tf.concat([semantics, real], -1), training=False)
        return pred_fake, tf.nest.map_structure(tf.stop_gradient, pred_real)

    def _scales(self, inputs, training):
        """D's outputs as a list over scales of lists of features (one scale for `n_layer`)."""
        outputs = self.discriminator(inputs, training=training)
        return [outputs] if self.cfg.model.netD == "n_layer" else outputs

    def _share(self, name, per_example):
        return losses.replica_loss(name, per_example, self.cfg.train.batch_size)

    def generator_losses(self, semantics, real):
        """GAN, feature matching, VGG and KL terms of the generator's step (this replica's shares)."""
        t = self.cfg.train
        fake, mu, logvar = self.generate(semantics, real)
        pred_fake, pred_real = self.discriminate_for_generator(semantics, fake, real)
        terms = {"GAN": self._share("gan", losses.generator_gan_loss(pred_fake, t.gan_mode))}
        if not t.no_ganFeat_loss:
            terms["GAN_Feat"] = self._share("feature_matching", losses.feature_matching_loss(pred_fake, pred_real,
                                                                                            t.lambda_feat))
        if self.vgg_loss is not None:
            terms["VGG"] = self._share("vgg", self.vgg_loss(fake, real))
        if self.encoder is not None:
            terms["KLD"] = self._share("kld", losses.kld_loss(mu, logvar, t.lambda_kld))
        return terms

    def discriminator_losses(self, semantics, real):
        """D_Fake and D_real on a fake regenerated without gradient, as the reference's D step."""
        fake, _, _ = self.generate(semantics, real, salt=1)
        fake = tf.stop_gradient(fake)
        pred_fake, pred_real = self.discriminate(semantics, fake, real)
        d_fake, d_real = losses.discriminator_gan_loss(pred_fake, pred_real, self.cfg.train.gan_mode)
        return {"D_Fake": self._share("gan", d_fake), "D_real": self._share("gan", d_real)}
