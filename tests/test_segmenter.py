"""The built-in data's reference segmenter: near-perfect on its photos, low on noise and unrelated images."""

import numpy as np
import pytest

from spade_tf.data.segmenter import segment
from spade_tf.data.synthetic import synthetic_dataset
from spade_tf.evaluation.segmentation import miou

NUM_CLASSES = 8


@pytest.fixture(scope="module")
def photos():
    """32 built-in samples at 64x64: float images in [-1, 1] and their labels."""
    batch = next(iter(synthetic_dataset(32, 11, 64, 64).batch(32).as_numpy_iterator()))
    return batch["image"], batch["label"]


def test_high_miou_on_built_in_photos(photos):
    images, labels = photos
    pred = segment(images)
    assert pred.dtype == np.uint8 and pred.shape == labels.shape
    value, per_class, accuracy = miou(pred, labels, NUM_CLASSES)
    assert value > 0.98 and per_class.min() > 0.95 and accuracy > 0.99  # measured: 0.995, 0.99, 0.999


def test_low_miou_on_noise_and_unrelated_images(photos):
    images, labels = photos
    noise = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
    assert miou(segment(noise), labels, NUM_CLASSES)[0] < 0.15  # measured: 0.06
    unrelated = np.roll(images, 1, axis=0)  # each label map paired with another sample's photo
    assert miou(segment(unrelated), labels, NUM_CLASSES)[0] < 0.4  # measured: 0.2


def test_uint8_float_batched_and_single_agree(photos):
    images, _ = photos
    as_uint8 = np.round((images[:4] + 1.0) * 127.5).astype(np.uint8)
    batched = segment(images[:4])
    np.testing.assert_array_equal(segment(as_uint8), batched)
    np.testing.assert_array_equal(segment(images[2]), batched[2])
    assert segment(images[2]).shape == (64, 64)


def test_segment_rejects_bad_images():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        segment(np.full((8, 8, 3), 200.0, np.float32))
    with pytest.raises(ValueError, match="RGB"):
        segment(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        segment(np.full((8, 8, 3), np.nan, np.float32))
