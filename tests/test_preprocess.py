"""Preprocessing modes: output sizes by the reference's rules, shared crop/flip, resampling, range."""

import numpy as np
import pytest
import tensorflow as tf

from spade_tf.config import DataConfig
from spade_tf.data import preprocess
from spade_tf.data.preprocess import output_size

PALETTE = np.array(
    [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255], [255, 255, 255]],
    np.uint8,
)


def data_cfg(mode, load=64, crop=32, aspect=1.0, **kw):
    return DataConfig(preprocess_mode=mode, load_size=load, crop_size=crop, aspect_ratio=aspect, **kw)


# Expected sizes worked out by hand from the reference's rules (H, W).
@pytest.mark.parametrize(
    "mode, load, crop, aspect, size, expected",
    [
        ("resize_and_crop", 286, 256, 1.0, (40, 80), (256, 256)),
        ("crop", 64, 32, 1.0, (40, 80), (32, 32)),
        ("scale_width", 64, 32, 1.0, (40, 80), (32, 64)),
        ("scale_width", 64, 32, 1.0, (45, 77), (37, 64)),  # 64 * 45 / 77 = 37.4 -> 37
        ("scale_width_and_crop", 64, 32, 1.0, (40, 80), (32, 32)),
        ("scale_shortside", 64, 32, 1.0, (40, 80), (64, 128)),
        ("scale_shortside", 64, 32, 1.0, (80, 40), (128, 64)),
        ("scale_shortside", 64, 32, 1.0, (45, 77), (64, 109)),  # 64 * 77 / 45 = 109.5 -> 109
        ("scale_shortside_and_crop", 64, 48, 1.0, (40, 80), (48, 48)),
        ("fixed", 512, 512, 2.0, (1024, 2048), (256, 512)),
        ("fixed", 64, 100, 1.5, (40, 80), (67, 100)),  # round(66.7)
        ("none", 64, 32, 1.0, (40, 80), (32, 64)),  # 1.25 -> 1, 2.5 -> 2 (half to even)
        ("none", 64, 32, 1.0, (48, 112), (64, 128)),  # 1.5 -> 2, 3.5 -> 4
    ],
)
def test_output_size_follows_the_reference_rules(mode, load, crop, aspect, size, expected):
    assert output_size(data_cfg(mode, load, crop, aspect), *size) == expected


@pytest.mark.parametrize("mode", preprocess.MODES)
def test_preprocess_produces_output_size_in_a_graph(mode):
    cfg = data_cfg(mode, load=48, crop=32, aspect=2.0)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([None, None], tf.int32)])
    def shapes(image, label):  # unknown H, W: the sizes are computed in the graph
        out = preprocess.preprocess(cfg, image, label, label, seed=tf.constant([1, 2]), training=True)
        return [tf.shape(t) for t in out]

    h, w = 40, 72
    got = [s.numpy().tolist() for s in shapes(np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.int32))]
    oh, ow = output_size(cfg, h, w)
    assert got == [[oh, ow, 3], [oh, ow], [oh, ow]]


def coordinate_sample(h=40, w=80):
    """Image whose R, G channels are each pixel's x, y; label and instance are functions of (x, y)."""
    y, x = np.mgrid[:h, :w]
    label = (x // 7 + 2 * (y // 9)) % 8
    instance = label * 1000 + x // 13
    image = np.stack([x, y, label * 30], -1).astype(np.uint8)
    return image, label.astype(np.int32), instance.astype(np.int32)


def run(cfg, image, label, instance, seed, training=True):
    out = preprocess.preprocess(cfg, image, label, instance, seed=tf.constant(seed, tf.int64), training=training)
    return [None if t is None else t.numpy() for t in out]


def test_crop_and_flip_are_shared_by_image_label_and_instance():
    image, label, instance = coordinate_sample()
    cfg = data_cfg("crop", crop=24)
    offsets, flips = set(), set()
    for s in range(16):
        img, lab, ins = run(cfg, image, label, instance, [s, 7])
        xs = np.round((img[..., 0] + 1) * 127.5).astype(int)
        ys = np.round((img[..., 1] + 1) * 127.5).astype(int)
        # every output pixel shows the label and instance of the source pixel the image came from
        np.testing.assert_array_equal(lab, label[ys, xs])
        np.testing.assert_array_equal(ins, instance[ys, xs])
        # and the image is a contiguous 24 x 24 window, mirrored or not
        step = xs[0, 1] - xs[0, 0]
        assert step in (1, -1)
        np.testing.assert_array_equal(xs, xs[:1] + 0 * xs)
        np.testing.assert_array_equal(ys, ys[:, :1] + 0 * ys)
        np.testing.assert_array_equal(np.diff(xs[0]), step)
        np.testing.assert_array_equal(np.diff(ys[:, 0]), 1)
        offsets.add((ys.min(), xs.min()))
        flips.add(step == -1)
    assert flips == {True, False}
    assert len(offsets) > 4


def test_no_flip_outside_training_or_with_no_flip():
    image, label, instance = coordinate_sample()
    for cfg, training in ((data_cfg("crop", crop=24), False), (data_cfg("crop", crop=24, no_flip=True), True)):
        for s in range(8):
            img, _, _ = run(cfg, image, label, instance, [s, 0], training)
            xs = np.round((img[..., 0] + 1) * 127.5)
            assert (np.diff(xs, axis=1) == 1).all()


def test_same_seed_same_sample_other_seed_other_crop():
    image, label, instance = coordinate_sample()
    cfg = data_cfg("crop", crop=24)
    a = run(cfg, image, label, instance, [3, 4])
    b = run(cfg, image, label, instance, [3, 4])
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    others = [run(cfg, image, label, instance, [3, k])[0] for k in range(5, 9)]
    assert any(not np.array_equal(a[0], o) for o in others)


def block_sample(h=64, w=128, block=16):
    """Blocky label map; the image paints each class with its own colour; instance = label * 1000 + column."""
    y, x = np.mgrid[:h, :w]
    label = ((x // block) * 3 + (y // block) * 5 + (x // (2 * block))) % 8
    instance = label * 1000 + x // block
    return PALETTE[label], label.astype(np.int32), instance.astype(np.int32)


def interior(label, radius):
    """Pixels whose (2r+1)^2 neighbourhood has one label."""
    h, w = label.shape
    ok = np.zeros_like(label, bool)
    for i in range(radius, h - radius):
        for j in range(radius, w - radius):
            win = label[i - radius:i + radius + 1, j - radius:j + radius + 1]
            ok[i, j] = (win == label[i, j]).all()
    return ok


@pytest.mark.parametrize(
    "mode, load, crop",
    [
        ("resize_and_crop", 96, 64),
        ("resize_and_crop", 48, 32),  # shrinking 0.75 x 0.375
        ("scale_width_and_crop", 120, 48),
        ("scale_shortside_and_crop", 48, 40),
        ("scale_width", 64, 32),
        ("fixed", 64, 100),
        ("none", 64, 32),
    ],
)
def test_resized_image_label_and_instance_stay_aligned(mode, load, crop):
    image, label, instance = block_sample()
    cfg = data_cfg(mode, load=load, crop=crop, aspect=1.5)
    for s in range(4):
        img, lab, ins = run(cfg, image, label, instance, [s, 1])
        np.testing.assert_array_equal(ins // 1000, lab)  # instance resized and cropped like the label
        assert set(np.unique(lab)) <= set(np.unique(label))  # nearest: no new label values
        inside = interior(lab, 2)
        assert inside.mean() > 0.05
        expected = PALETTE[lab].astype(np.float32) / 127.5 - 1
        err = np.abs(img - expected).max(-1)[inside]
        assert np.quantile(err, 0.99) < 0.1, f"{mode}: image colours do not follow the label"


def test_bicubic_overshoot_is_clipped_to_the_image_range():
    checker = (np.indices((8, 8)).sum(0) % 2 * 255).astype(np.uint8)
    image = np.repeat(checker[..., None], 3, -1)
    label = np.zeros((8, 8), np.int32)
    cfg = data_cfg("resize_and_crop", load=29, crop=29)
    raw = tf.image.resize(image.astype(np.float32), (29, 29), method="bicubic", antialias=True).numpy()
    assert raw.max() > 255 and raw.min() < 0  # bicubic rings past the input range...
    img, _, _ = run(cfg, image, label, None, [0, 0], training=False)
    assert img.max() == 1.0 and img.min() == -1.0  # ...and the output is clipped to [-1, 1]
    np.testing.assert_allclose(img, np.clip(raw, 0, 255) / 127.5 - 1, atol=1e-5)


def test_check_config_rejects_unknown_mode_and_load_below_crop():
    with pytest.raises(ValueError, match="'data.preprocess_mode' must be one of resize_and_crop, .*; got 'zoom'"):
        data_cfg("zoom")  # the config's choice check: no DataConfig holds an unknown mode
    with pytest.raises(ValueError, match="load_size 32 is smaller than data.crop_size 64"):
        preprocess.check_config(data_cfg("resize_and_crop", load=32, crop=64))


def test_too_small_flags_sizes_the_mode_cannot_crop():
    cfg = data_cfg("crop", crop=64)
    np.testing.assert_array_equal(preprocess.too_small(cfg, [40, 64, 100], [80, 64, 50]), [True, False, True])
    cfg = data_cfg("scale_width_and_crop", load=128, crop=64)  # 128 wide -> 64 high at aspect 2: fits
    np.testing.assert_array_equal(preprocess.too_small(cfg, [64, 60], [128, 128]), [False, True])
    cfg = data_cfg("none")  # a side of 16 px or less rounds to 0 (0.5 rounds to even)
    np.testing.assert_array_equal(preprocess.too_small(cfg, [16, 17], [64, 64]), [True, False])
