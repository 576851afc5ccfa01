"""KL divergence of the VAE encoder's N(mu, exp(logvar)) from N(0, I) (the reference's `KLDLoss`)."""

from keras import ops


def kld_loss(mu, logvar, lambda_kld):
    """Per-example [batch] KL term: -0.5 * sum(1 + logvar - mu^2 - exp(logvar)) * lambda_kld.

    The sum runs over each example's elements. The reference also sums over the batch (no mean),
    so the trainer must SUM these values over the replica's examples and not divide by the
    global batch size (REDUCTION["kld"] == "sum"; `replica_loss("kld", ...)` does it): summed
    across replicas this gives the reference's loss for the global batch.
    """
    mu, logvar = ops.cast(mu, "float32"), ops.cast(logvar, "float32")
    if tuple(mu.shape) != tuple(logvar.shape):
        raise ValueError(f"kld_loss: mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} must have one shape")
    terms = 1.0 + logvar - ops.square(mu) - ops.exp(logvar)
    return -0.5 * ops.sum(terms, axis=tuple(range(1, len(mu.shape)))) * lambda_kld
