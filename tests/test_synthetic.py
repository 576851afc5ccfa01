import numpy as np
import pytest
import tensorflow as tf

from spade_tf.data.synthetic import (
    OBJECT,
    SYNTHETIC_CLASSES,
    THING_CLASSES,
    synthetic_dataset,
    synthetic_sample,
)

NUM_CLASSES = 8


def _batch(num_samples, seed, height, width):
    return next(iter(synthetic_dataset(num_samples, seed, height, width).batch(num_samples).as_numpy_iterator()))


def _to_uint8(image):
    return np.round((image + 1.0) * 127.5).astype(np.uint8)


def test_eight_named_classes():
    assert len(SYNTHETIC_CLASSES) == NUM_CLASSES == len(set(SYNTHETIC_CLASSES))


@pytest.mark.parametrize("height,width", [(64, 64), (64, 128), (48, 32)])
def test_sample_shapes_and_dtypes(height, width):
    sample = synthetic_sample(0, 0, height, width)
    assert sample["label"].dtype == np.uint8 and sample["label"].shape == (height, width)
    assert sample["instance"].dtype == np.int32 and sample["instance"].shape == (height, width)
    assert sample["image"].dtype == np.uint8 and sample["image"].shape == (height, width, 3)
    assert sample["label"].max() < NUM_CLASSES


@pytest.mark.parametrize("height,width", [(64, 64), (64, 128)])
def test_dataset_elements(height, width):
    ds = synthetic_dataset(3, 0, height, width)
    spec = ds.element_spec
    assert spec["label"] == tf.TensorSpec([height, width], tf.int32)
    assert spec["instance"] == tf.TensorSpec([height, width], tf.int32)
    assert spec["image"] == tf.TensorSpec([height, width, 3], tf.float32)
    images = np.stack([e["image"] for e in ds.as_numpy_iterator()])
    assert len(images) == 3
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert images.max() - images.min() > 1.0  # a photo, not a flat image


def test_same_seed_same_sample_other_seed_or_index_differs():
    a, b = synthetic_sample(3, 5, 64, 64), synthetic_sample(3, 5, 64, 64)
    for key in ("label", "instance", "image"):
        np.testing.assert_array_equal(a[key], b[key])
    for other in (synthetic_sample(3, 6, 64, 64), synthetic_sample(4, 5, 64, 64)):
        assert not np.array_equal(a["image"], other["image"])
        assert np.mean(a["label"] != other["label"]) > 0.05


def test_sample_independent_of_order_and_sharding():
    elements = list(synthetic_dataset(8, 2, 64, 96).as_numpy_iterator())
    for i in (7, 2, 0):  # alone, out of order
        alone = synthetic_sample(i, 2, 64, 96)
        np.testing.assert_array_equal(alone["label"], elements[i]["label"])
        np.testing.assert_array_equal(alone["instance"], elements[i]["instance"])
        np.testing.assert_array_equal(alone["image"], _to_uint8(elements[i]["image"]))
    shard = list(synthetic_dataset(8, 2, 64, 96).shard(2, 1).as_numpy_iterator())
    for element, i in zip(shard, (1, 3, 5, 7)):
        np.testing.assert_array_equal(element["image"], elements[i]["image"])
    # The same samples, whatever the dataset length.
    longer = list(synthetic_dataset(10, 2, 64, 96).take(8).as_numpy_iterator())
    np.testing.assert_array_equal(longer[5]["label"], elements[5]["label"])


def test_every_class_appears_often():
    labels = _batch(32, 1, 64, 64)["label"]
    present = np.array([[np.any(label == c) for c in range(NUM_CLASSES)] for label in labels])
    assert present.mean(axis=0).min() >= 0.7, dict(zip(SYNTHETIC_CLASSES, present.mean(axis=0)))
    for start in range(0, 32, 8):  # any 8 consecutive layouts hold every class
        assert set(np.unique(labels[start : start + 8])) == set(range(NUM_CLASSES))


def test_instance_ids():
    batch = _batch(16, 4, 64, 64)
    samples_with_several_objects = 0
    for label, instance in zip(batch["label"], batch["instance"]):
        thing = np.isin(label, THING_CLASSES)
        assert np.all(instance[~thing] == 0)  # stuff has no instances
        assert np.all(instance[thing] != 0)
        for instance_id in np.unique(instance[thing]):
            classes = np.unique(label[instance == instance_id])
            assert len(classes) == 1  # an instance belongs to one class ...
            assert instance_id // 1000 == classes[0]  # ... and its id says which
        objects = np.unique(instance[label == OBJECT])
        samples_with_several_objects += len(objects) >= 2
    assert samples_with_several_objects >= 8


def test_layout_is_the_same_at_any_resolution():
    small = synthetic_sample(6, 0, 64, 128)["label"]
    large = synthetic_sample(6, 0, 128, 256)["label"]
    assert np.mean(large[::2, ::2] == small) > 0.9


def test_bad_arguments():
    with pytest.raises(ValueError, match="height"):
        synthetic_sample(0, 0, 0, 64)
    with pytest.raises(ValueError, match="width"):
        synthetic_dataset(4, 0, 64, 64.0)
    with pytest.raises(ValueError, match="index"):
        synthetic_sample(-1, 0, 64, 64)
    with pytest.raises(ValueError, match="num_samples"):
        synthetic_dataset(-2, 0, 64, 64)
