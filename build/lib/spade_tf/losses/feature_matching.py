"""Discriminator feature matching (pix2pixHD's, used by SPADE): L1 between D's intermediate features."""

from keras import ops

from spade_tf.losses.gan import check_outputs, per_example_mean


def feature_matching_loss(fake_outputs, real_outputs, lambda_feat):
    """Per-example [batch] feature-matching loss.

    For every scale and every output but the last (the logits): the L1 distance (mean over the
    elements) between D(fake)'s and D(real)'s features, real ones under stop_gradient, each term
    scaled by lambda_feat / num_D, all summed.
    """
    check_outputs(fake_outputs, "feature_matching_loss fake_outputs")
    check_outputs(real_outputs, "feature_matching_loss real_outputs")
    shape = lambda outputs: [len(scale) for scale in outputs]  # noqa: E731
    if shape(fake_outputs) != shape(real_outputs):
        raise ValueError(f"feature_matching_loss: fake and real outputs differ in structure (features per "
                         f"scale {shape(fake_outputs)} vs {shape(real_outputs)}); both must come from "
                         "the same discriminator")
    terms = [
        per_example_mean(ops.abs(ops.cast(f, "float32") - ops.stop_gradient(ops.cast(r, "float32"))))
        for fake_scale, real_scale in zip(fake_outputs, real_outputs)
        for f, r in zip(fake_scale[:-1], real_scale[:-1])
    ]
    if not terms:
        raise ValueError("feature_matching_loss: the discriminator returned no intermediate features, "
                         "only logits")
    return ops.sum(ops.stack(terms), axis=0) * (lambda_feat / len(fake_outputs))
