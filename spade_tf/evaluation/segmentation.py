"""Segmentation scores of generated images: mIoU and pixel accuracy against the input layouts.

The paper's Table 1 measure: run a segmenter on the generated images and compare its label maps
with the layouts the images were generated from, through one confusion matrix accumulated over
the whole set (`confusion_matrix`, then `scores`). Layout pixels with the unknown label (255) are
left out. `confusion_matrix`, `scores` and `miou` are plain NumPy and work for any dataset.

A segmenter is a Python callable, uint8 images [B, H, W, 3] -> class indices [B, H, W] (or class
scores [B, H, W, C], reduced by argmax), or the path of a SavedModel whose `serving_default`
signature does the same with one image input (uint8, or float fed 0..255) and one output.
`"builtin"` names the reference segmenter of the built-in dataset (`spade_tf.data.segmenter.segment`).
"""

import pathlib

import numpy as np
import tensorflow as tf

from spade_tf.data import segmenter as builtin
from spade_tf.semantics import UNKNOWN_LABEL

BUILTIN = "builtin"


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


def segmenter_of(cfg):
    """eval.segmenter resolved: "auto" is the built-in data's reference segmenter on that data, else
    None; "none" is None."""
    name = cfg.eval.segmenter
    if name == "auto":
        return BUILTIN if cfg.data.dataset_mode == "synthetic" else None
    return None if name == "none" else name


class SavedModelSegmenter:
    """A segmentation SavedModel's `serving_default` signature as a segmenter callable."""

    def __init__(self, path, signature="serving_default"):
        path = pathlib.Path(path)
        if not (path / "saved_model.pb").is_file():
            raise FileNotFoundError(f"segmenter {path} is not a SavedModel folder (no saved_model.pb)")
        self._model = tf.saved_model.load(str(path))  # kept alive: the signature needs its variables
        if signature not in self._model.signatures:
            names = sorted(self._model.signatures)
            raise ValueError(f"segmenter {path} has no signature {signature!r}; it has {names}")
        self._function = self._model.signatures[signature]
        inputs = self._function.structured_input_signature[1]
        outputs = self._function.structured_outputs
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"segmenter {path} signature {signature!r} must take one image input and give one output; "
                f"it takes {sorted(inputs)} and gives {sorted(outputs)}"
            )
        (self._input, spec), = inputs.items()
        self._dtype = spec.dtype

    def __call__(self, images) -> np.ndarray:
        images = tf.cast(tf.constant(np.asarray(images, np.uint8)), self._dtype)
        (result,) = self._function(**{self._input: images}).values()
        return result.numpy()


def load_segmenter(segmenter):
    """A segmenter callable from a callable, `"builtin"` or a SavedModel path."""
    if callable(segmenter):
        return segmenter
    if segmenter == BUILTIN:
        return builtin.segment
    return SavedModelSegmenter(segmenter)


def _label_maps(prediction, shape) -> np.ndarray:
    """Segmenter output -> integer [B, H, W]; class scores [B, H, W, C] are reduced by argmax."""
    prediction = np.asarray(prediction)
    if prediction.ndim == len(shape) + 1 and prediction.shape[:-1] == shape:
        prediction = np.argmax(prediction, axis=-1)
    if prediction.shape != shape:
        raise ValueError(
            f"the segmenter returned shape {prediction.shape} for {shape[0]} images of {shape[1]}x{shape[2]}; "
            f"expected label maps {shape} or class scores {shape} + (classes,)"
        )
    if not np.issubdtype(prediction.dtype, np.integer):
        raise ValueError(f"the segmenter returned {prediction.dtype} values; expected integer class indices")
    return prediction


class SegmentationScore:
    """Accumulates one confusion matrix over batches of (generated images, layouts).

    Args:
        segmenter: a callable, `"builtin"` or a SavedModel path (see the module docstring).
        num_classes: label_nc, the classes the layouts use (not counting the unknown label).
        ignore_index: layout value left out of the scores (the unknown label).
    """

    def __init__(self, segmenter, num_classes: int, ignore_index=UNKNOWN_LABEL):
        self.segmenter = load_segmenter(segmenter)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = np.zeros((num_classes, num_classes), np.int64)

    def update(self, images, layouts) -> None:
        """images uint8 [B, H, W, 3] generated from layouts [B, H, W] (class indices, 255 = unknown)."""
        images, layouts = np.asarray(images), np.asarray(layouts)
        if images.ndim != 4 or images.shape[-1] != 3 or images.shape[:3] != layouts.shape:
            raise ValueError(
                f"images [B, H, W, 3] and layouts [B, H, W] must match; got {images.shape} and {layouts.shape}"
            )
        prediction = _label_maps(self.segmenter(images), layouts.shape)
        self.confusion += confusion_matrix(prediction, layouts, self.num_classes, self.ignore_index)

    def result(self) -> dict:
        """{"miou", "pixel_accuracy", "per_class_iou" (a list, None for classes absent from both), "pixels"}."""
        result = scores(self.confusion)
        iou = [None if np.isnan(v) else float(v) for v in result["per_class_iou"]]
        return {
            "miou": result["miou"],
            "pixel_accuracy": result["pixel_accuracy"],
            "per_class_iou": iou,
            "pixels": int(self.confusion.sum()),
        }


def segmentation_scores(segmenter, images, layouts, num_classes: int, ignore_index=UNKNOWN_LABEL) -> dict:
    """`SegmentationScore.result()` for one batch of images [B, H, W, 3] and layouts [B, H, W]."""
    score = SegmentationScore(segmenter, num_classes, ignore_index)
    score.update(images, layouts)
    return score.result()
