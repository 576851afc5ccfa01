"""A reference segmenter for the built-in synthetic photos.

SPADE is evaluated by segmenting its generated images and comparing with the input layouts. For
the built-in dataset no trained segmentation network is needed: each class is drawn with colours
on known lines in RGB (`synthetic.CLASS_COLORS`), so `segment` labels every pixel with the class
whose colour line is nearest, then cleans the result with a weighted majority filter. It is not
learned: it knows the classes' appearance from the generator's own description of it. On the
built-in photos it scores close to mIoU 1.0; on noise or unrelated images it scores low.

The scores it feeds (confusion matrix, mIoU, pixel accuracy) are in `spade_tf.evaluation.segmentation`.
"""

import numpy as np
from scipy import ndimage

from spade_tf.data.synthetic import CLASS_COLORS

WINDOW = 3  # side of the majority filter's square window, in pixels
CENTRE_VOTES = 2.5  # votes of the centre pixel (its neighbours have 1; the .5 avoids ties with it)

_CLASS = np.array([c for c, colors in enumerate(CLASS_COLORS) for _ in colors])
_DARK = np.array([dark for colors in CLASS_COLORS for dark, _ in colors], np.float32)
_LIGHT = np.array([light for colors in CLASS_COLORS for _, light in colors], np.float32)


def _as_rgb(images) -> np.ndarray:
    """uint8 [.., H, W, 3] in 0..255 or float in [-1, 1] -> float32 RGB in 0..255."""
    images = np.asarray(images)
    if images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(f"images must be [H, W, 3] or [batch, H, W, 3] RGB, got shape {images.shape}")
    if images.dtype == np.uint8:
        return images.astype(np.float32)
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be uint8 (0..255) or float in [-1, 1], got dtype {images.dtype}")
    if not np.all(np.isfinite(images)):
        raise ValueError("images contain NaN or infinite values")
    low, high = float(images.min(initial=0.0)), float(images.max(initial=0.0))
    if low < -1.001 or high > 1.001:
        raise ValueError(
            f"float images must be in [-1, 1], got values in [{low:.3g}, {high:.3g}]; pass uint8 for 0..255"
        )
    return (images.astype(np.float32) + 1.0) * 127.5


def _nearest_class(rgb: np.ndarray) -> np.ndarray:
    """float RGB [H, W, 3] -> the class whose colour line (dark..light segment) is nearest, [H, W]."""
    pixels = rgb.reshape(-1, 3)
    span = _LIGHT - _DARK  # [S, 3]
    offset = pixels[:, None, :] - _DARK[None]  # [P, S, 3]
    t = np.clip(np.einsum("psc,sc->ps", offset, span) / np.sum(span * span, axis=1), 0.0, 1.0)
    distance = np.sum((offset - t[..., None] * span) ** 2, axis=-1)  # [P, S]
    return _CLASS[np.argmin(distance, axis=1)].reshape(rgb.shape[:-1])


def _majority(labels: np.ndarray) -> np.ndarray:
    """Weighted majority filter: each pixel takes the class with most votes in its window, where
    every pixel votes 1 for its class and the centre pixel CENTRE_VOTES. Isolated wrong pixels
    flip; one-pixel-wide lines and corners, whose own class has enough votes, stay."""
    votes = np.stack(
        [
            WINDOW**2 * ndimage.uniform_filter((labels == c).astype(np.float32), size=WINDOW, mode="nearest")
            + (CENTRE_VOTES - 1.0) * (labels == c)
            for c in range(len(CLASS_COLORS))
        ],
        axis=-1,
    )
    return np.argmax(votes, axis=-1).astype(np.uint8)


def segment(images) -> np.ndarray:
    """Photos of the built-in dataset -> uint8 label maps ([H, W] or [batch, H, W], as given)."""
    rgb = _as_rgb(images)
    batched = rgb.reshape((-1,) + rgb.shape[-3:])
    labels = np.zeros(batched.shape[:-1], np.uint8)
    for i, image in enumerate(batched):  # one image at a time bounds the memory of the distances
        labels[i] = _majority(_nearest_class(image))
    return labels.reshape(rgb.shape[:-1])
