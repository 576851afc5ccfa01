"""The paper's losses, as in the reference (NVlabs/SPADE), each returning per-example values.

Every loss returns a float32 tensor [batch] (inputs of any float dtype are cast). Under
tf.distribute each replica turns those into its share of the loss, and the optimizer sums the
replicas' gradients; `REDUCTION` says how, so that the total equals the reference's loss on the
global batch:

- "mean" (adversarial, feature matching, VGG; the reference takes means over all elements):
  sum over the replica's examples / global batch size, i.e. `tf.nn.compute_average_loss(values,
  global_batch_size=...)`.
- "sum" (KL divergence; the reference sums over elements and batch): sum over the replica's
  examples, with no division.

`replica_loss(name, values, global_batch_size)` applies the right one.
"""

from keras import ops

from spade_tf.losses.feature_matching import feature_matching_loss
from spade_tf.losses.gan import discriminator_gan_loss, generator_gan_loss
from spade_tf.losses.kld import kld_loss
from spade_tf.losses.vgg import VGG19Features, VGGLoss, build_vgg, load_keras_imagenet_vgg19, load_torchvision_vgg19

REDUCTION = {"gan": "mean", "feature_matching": "mean", "vgg": "mean", "kld": "sum"}


def replica_loss(name, per_example, global_batch_size):
    """One replica's share of loss `name` (a key of REDUCTION) from its per-example values."""
    if name not in REDUCTION:
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(REDUCTION)}")
    total = ops.sum(ops.cast(per_example, "float32"))
    return total if REDUCTION[name] == "sum" else total / global_batch_size


__all__ = [
    "REDUCTION",
    "VGG19Features",
    "VGGLoss",
    "build_vgg",
    "discriminator_gan_loss",
    "feature_matching_loss",
    "generator_gan_loss",
    "kld_loss",
    "load_keras_imagenet_vgg19",
    "load_torchvision_vgg19",
    "replica_loss",
]
