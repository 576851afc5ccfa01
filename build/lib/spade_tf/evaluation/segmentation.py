"""Segmentation scores of generated images: mIoU and pixel accuracy against the input layouts.

The paper's Table 1 measure: run a segmenter on the generated images and compare its label maps
with the layouts the images were generated from, through one confusion matrix accumulated over
the whole set (`spade_tf.data.segmenter.confusion_matrix` and `scores`). Layout pixels with the
unknown label (255) are left out.

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
        self.confusion += builtin.confusion_matrix(prediction, layouts, self.num_classes, self.ignore_index)

    def result(self) -> dict:
        """{"miou", "pixel_accuracy", "per_class_iou" (a list, None for classes absent from both), "pixels"}."""
        scores = builtin.scores(self.confusion)
        iou = [None if np.isnan(v) else float(v) for v in scores["per_class_iou"]]
        return {
            "miou": scores["miou"],
            "pixel_accuracy": scores["pixel_accuracy"],
            "per_class_iou": iou,
            "pixels": int(self.confusion.sum()),
        }


def segmentation_scores(segmenter, images, layouts, num_classes: int, ignore_index=UNKNOWN_LABEL) -> dict:
    """`SegmentationScore.result()` for one batch of images [B, H, W, 3] and layouts [B, H, W]."""
    score = SegmentationScore(segmenter, num_classes, ignore_index)
    score.update(images, layouts)
    return score.result()
