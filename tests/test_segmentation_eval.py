"""Segmentation scores of generated images: hand-computed mIoU / pixel accuracy with the unknown
label ignored, callable, score-map and SavedModel segmenters, and the built-in segmenter."""

import numpy as np
import pytest
import tensorflow as tf

from spade_tf.config import load_config
from spade_tf.data.synthetic import synthetic_dataset
from spade_tf.evaluation.segmentation import (
    BUILTIN,
    SegmentationScore,
    confusion_matrix,
    load_segmenter,
    miou,
    scores,
    segmentation_scores,
    segmenter_of,
)
from spade_tf.training.visuals import to_uint8

# One 2x4 layout with two unknown pixels (255), and the prediction a segmenter should make.
LAYOUT = np.array([[[0, 0, 1, 1], [2, 255, 255, 1]]], np.uint8)
PREDICTION = np.array([[[0, 1, 1, 1], [2, 2, 0, 0]]])
# By hand, over the 6 known pixels: 4 right -> accuracy 4/6. IoU = TP / (TP + FP + FN):
# class 0: TP 1, FP 1 (bottom right), FN 1 (top, 2nd) -> 1/3; class 1: TP 2, FP 1, FN 1 -> 1/2;
# class 2: TP 1 (its prediction on an unknown pixel does not count) -> 1. mIoU = (1/3 + 1/2 + 1) / 3.
EXPECTED_MIOU = 11 / 18
EXPECTED_ACCURACY = 4 / 6


def images_encoding(prediction):
    """Images whose red channel holds 100 x the class a segmenter should read from them."""
    images = np.zeros(prediction.shape + (3,), np.uint8)
    images[..., 0] = 100 * prediction
    return images


def red_segmenter(images):
    return np.asarray(images)[..., 0] // 100


def test_callable_segmenter_scores_by_hand_ignoring_the_unknown_label():
    result = segmentation_scores(red_segmenter, images_encoding(PREDICTION), LAYOUT, num_classes=3)
    assert result["miou"] == pytest.approx(EXPECTED_MIOU)
    assert result["pixel_accuracy"] == pytest.approx(EXPECTED_ACCURACY)
    assert result["per_class_iou"] == pytest.approx([1 / 3, 1 / 2, 1.0])
    assert result["pixels"] == 6


def test_scores_accumulate_over_batches_into_one_confusion_matrix():
    rng = np.random.default_rng(0)
    layouts = rng.integers(0, 3, (4, 5, 6)).astype(np.uint8)
    layouts[0, 0, :3] = 255
    predictions = np.where(rng.random((4, 5, 6)) < 0.7, layouts % 255, rng.integers(0, 3, (4, 5, 6)))
    images = images_encoding(predictions)
    score = SegmentationScore(red_segmenter, 3)
    score.update(images[:1], layouts[:1])
    score.update(images[1:], layouts[1:])
    whole = segmentation_scores(red_segmenter, images, layouts, 3)
    assert score.result() == whole
    known = layouts != 255
    assert whole["pixel_accuracy"] == pytest.approx(np.mean(predictions[known] == layouts[known]))


def test_class_scores_are_reduced_by_argmax_and_bad_outputs_are_refused():
    def scores_segmenter(images):
        return np.eye(3)[red_segmenter(images)] * 0.9  # [B, H, W, C]

    result = segmentation_scores(scores_segmenter, images_encoding(PREDICTION), LAYOUT, 3)
    assert result["miou"] == pytest.approx(EXPECTED_MIOU)
    with pytest.raises(ValueError, match="returned shape"):
        segmentation_scores(lambda images: np.zeros((1, 3, 3), np.int64), images_encoding(PREDICTION), LAYOUT, 3)
    with pytest.raises(ValueError, match="integer class indices"):
        segmentation_scores(lambda images: np.zeros((1, 2, 4)), images_encoding(PREDICTION), LAYOUT, 3)
    with pytest.raises(ValueError, match=r"prediction has values \[7\]"):
        segmentation_scores(lambda images: np.full((1, 2, 4), 7), images_encoding(PREDICTION), LAYOUT, 3)
    with pytest.raises(ValueError, match=r"target has values \[9\]"):
        segmentation_scores(red_segmenter, images_encoding(PREDICTION), np.where(LAYOUT == 0, 9, LAYOUT), 3)
    with pytest.raises(ValueError, match="must match"):
        segmentation_scores(red_segmenter, images_encoding(PREDICTION), LAYOUT[:, :1], 3)


class RedSegmenterModule(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve(self, images):
        return {"labels": tf.cast(images[..., 0], tf.int32) // 100}


def test_saved_model_segmenter(tmp_path):
    module = RedSegmenterModule()
    tf.saved_model.save(module, str(tmp_path / "segmenter"), signatures={"serving_default": module.serve})
    result = segmentation_scores(str(tmp_path / "segmenter"), images_encoding(PREDICTION), LAYOUT, 3)
    assert result["miou"] == pytest.approx(EXPECTED_MIOU)
    with pytest.raises(FileNotFoundError, match="not a SavedModel"):
        load_segmenter(str(tmp_path))


def test_builtin_segmenter_recovers_the_built_in_layouts():
    samples = list(synthetic_dataset(2, seed=5, height=64, width=64).as_numpy_iterator())
    photos = to_uint8(np.stack([s["image"] for s in samples]))
    layouts = np.stack([s["label"] for s in samples]).astype(np.uint8)
    assert segmentation_scores("builtin", photos, layouts, 8)["miou"] > 0.8
    noise = np.random.default_rng(1).integers(0, 256, photos.shape, dtype=np.uint8)
    assert segmentation_scores("builtin", noise, layouts, 8)["miou"] < 0.3


def test_confusion_matrix_and_scores_by_hand():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    confusion = confusion_matrix(pred, target, 3, ignore_index=255)
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 2, 0], [0, 0, 1]])
    result = scores(confusion)
    # IoU: class 0 = 1 / (1 + 1), class 1 = 2 / (2 + 1), class 2 = 1 / 1; accuracy 4 of 5 pixels.
    np.testing.assert_allclose(result["per_class_iou"], [0.5, 2 / 3, 1.0])
    assert result["miou"] == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert result["pixel_accuracy"] == pytest.approx(0.8)
    value, per_class, accuracy = miou(pred, target, 3, ignore_index=255)
    assert value == pytest.approx(result["miou"]) and accuracy == pytest.approx(0.8)


def test_absent_classes():
    target = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 2])  # class 2 predicted but never true, class 3 in neither
    per_class = scores(confusion_matrix(pred, target, 4))["per_class_iou"]
    np.testing.assert_allclose(per_class[:3], [1.0, 0.5, 0.0])
    assert np.isnan(per_class[3])
    assert miou(pred, target, 4)[0] == pytest.approx(0.5)


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 3)
    with pytest.raises(ValueError, match=r"target has values \[255\]"):
        confusion_matrix(np.zeros(2, int), np.array([0, 255]), 3)
    with pytest.raises(ValueError, match=r"prediction has values \[7\]"):
        confusion_matrix(np.array([0, 7]), np.zeros(2, int), 3)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix(np.zeros(2, np.float32), np.zeros(2, int), 3)
    with pytest.raises(ValueError, match="empty"):
        scores(np.zeros((3, 3)))


def test_segmenter_of_resolves_auto_by_dataset():
    assert segmenter_of(load_config("synthetic")) == BUILTIN  # eval.segmenter=auto on the built-in data
    assert segmenter_of(load_config("cityscapes")) is None  # no built-in segmenter for real data
    assert segmenter_of(load_config("synthetic", ["eval.segmenter=none"])) is None
    assert segmenter_of(load_config("cityscapes", ["eval.segmenter=segmenters/city"])) == "segmenters/city"
