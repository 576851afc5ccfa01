"""A reference segmenter for the built-in synthetic photos, and segmentation scores (mIoU).

SPADE is evaluated by segmenting its generated images and comparing with the input layouts. For
the built-in dataset no trained segmentation network is needed: each class is drawn with colours
on known lines in RGB (`synthetic.CLASS_COLORS`), so `segment` labels every pixel with the class
whose colour line is nearest, then cleans the result with a weighted majority filter. It is not
learned: it knows the classes' appearance from the generator's own description of it. On the
built-in photos it scores close to mIoU 1.0; on noise or unrelated images it scores low.

`confusion_matrix` and `scores` are plain NumPy and work for any dataset.
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


def confusion_matrix(pred, target, num_classes: int, ignore_index=None) -> np.ndarray:
    """int64 [num_classes, num_classes]: entry [t, p] counts pixels of true class t predicted as p.

    Pixels whose target is `ignore_index` are left out. Any other value outside 0..num_classes-1,
    in either map, is a ValueError.
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
    for name, values in (("prediction", pred), ("target", target)):
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{name} must hold integer class indices, got dtype {values.dtype}")
    keep = np.ones(target.shape, bool) if ignore_index is None else target != ignore_index
    pred, target = pred[keep].astype(np.int64), target[keep].astype(np.int64)
    for name, values in (("prediction", pred), ("target", target)):
        bad = (values < 0) | (values >= num_classes)
        if bad.any():
            found = np.unique(values[bad])[:10].tolist()
            ignore = f" or {ignore_index} (ignored)" if ignore_index is not None and name == "target" else ""
            raise ValueError(f"{name} has values {found}; expected class indices 0..{num_classes - 1}{ignore}")
    return np.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def scores(confusion) -> dict:
    """{"miou", "pixel_accuracy", "per_class_iou"} from a confusion matrix (rows: target).

    IoU of class c = TP / (TP + FP + FN). A class absent from both target and prediction has no
    IoU (NaN in `per_class_iou`) and is left out of the mean; a class that is predicted but never
    present scores 0.
    """
    confusion = np.asarray(confusion, np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion matrix must be square [C, C], got shape {confusion.shape}")
    total = confusion.sum()
    if total == 0:
        raise ValueError("confusion matrix is empty: no labelled pixels to score")
    true_positive = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class_iou = np.where(union > 0, true_positive / union, np.nan)
    return {
        "miou": float(np.nanmean(per_class_iou)),
        "pixel_accuracy": float(true_positive.sum() / total),
        "per_class_iou": per_class_iou,
    }


def miou(pred, target, num_classes: int, ignore_index=None):
    """(mean IoU, per-class IoU [num_classes] with NaN for absent classes, pixel accuracy)."""
    result = scores(confusion_matrix(pred, target, num_classes, ignore_index))
    return result["miou"], result["per_class_iou"], result["pixel_accuracy"]
