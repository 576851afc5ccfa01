"""Layouts for the region-wise SPADE benchmarks: built-in landscapes, Voronoi regions, noise.

Each returns uint8 class ids [batch, H, W] (and int32 instance ids where the built-in data has
them) for a label set of `label_nc` classes, deterministically from `seed`.
"""

import numpy as np

KINDS = ("landscapes", "voronoi30", "noise")


def landscapes(batch, height, width, label_nc, seed=0):
    """The built-in procedural landscapes (8 classes) at this size; instance ids as drawn."""
    from spade_tf.data.synthetic import synthetic_sample

    samples = [synthetic_sample(seed * 1000 + i, 0, height, width) for i in range(batch)]
    labels = np.stack([np.asarray(s["label"]) for s in samples]).astype(np.uint8) % label_nc
    instances = np.stack([np.asarray(s["instance"]) for s in samples]).astype(np.int32)
    return labels, instances


def voronoi(batch, height, width, label_nc, regions=30, seed=0):
    """`regions` random seeds per image, each cell one random class of the label set."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    labels, instances = [], []
    for _ in range(batch):
        points = rng.uniform((0, 0), (height, width), (regions, 2))
        cell = np.argmin((yy[..., None] - points[:, 0]) ** 2 + (xx[..., None] - points[:, 1]) ** 2, axis=-1)
        labels.append(rng.integers(0, label_nc, regions)[cell])
        instances.append(cell)
    return np.stack(labels).astype(np.uint8), np.stack(instances).astype(np.int32)


def noise(batch, height, width, label_nc, seed=0):
    """A class drawn independently per pixel: every pixel is a boundary."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, label_nc, (batch, height, width))
    return labels.astype(np.uint8), np.arange(batch * height * width, dtype=np.int32).reshape(batch, height, width)


def layouts(kind, batch, height, width, label_nc, seed=0):
    if kind not in KINDS:
        raise ValueError(f"layout kind '{kind}' is not one of {', '.join(KINDS)}")
    return {"landscapes": landscapes, "voronoi30": voronoi, "noise": noise}[kind](batch, height, width, label_nc,
                                                                                 seed=seed)
