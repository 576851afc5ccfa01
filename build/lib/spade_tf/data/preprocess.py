"""The reference's preprocessing modes, as TF ops usable inside `tf.data` maps.

One resize step (the mode's target size, computed from the label map's size), then a random
crop_size x crop_size crop for the `*crop` modes, then a random horizontal flip in training.
Crop position and flip are drawn once per sample from a stateless seed and shared by image,
label and instance map. Labels and instances are resized nearest-neighbour, images bicubic
(antialiased when shrinking, as PIL does), clipped and scaled to [-1, 1].

| mode | size before the crop (H, W) from the label's (h, w) |
|---|---|
| resize_and_crop | (load_size, load_size), then crop |
| crop | (h, w), then crop |
| scale_width[_and_crop] | (load_size * h // w, load_size) |
| scale_shortside[_and_crop] | short side load_size, long side load_size * long // short |
| fixed | (round(crop_size / aspect_ratio), crop_size), no crop |
| none | each side rounded to a multiple of 32 (half to even, like Python's round) |

The reference's `scale_shortside` keeps the short side unchanged (its target size is computed
but unused); here the short side becomes load_size, as the modes' description says.
"""

import numpy as np
import tensorflow as tf

MODES = (
    "resize_and_crop", "crop", "scale_width", "scale_width_and_crop",
    "scale_shortside", "scale_shortside_and_crop", "fixed", "none",
)
MULTIPLE = 32  # `none` rounds each side to a multiple of this


def crops(mode: str) -> bool:
    return mode.endswith("crop")


def check_config(cfg_data) -> None:
    """ValueError for a preprocessing setup no file could satisfy."""
    mode = cfg_data.preprocess_mode
    if mode not in MODES:
        raise ValueError(f"unknown data.preprocess_mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode in ("resize_and_crop", "scale_width_and_crop", "scale_shortside_and_crop"):
        if cfg_data.load_size < cfg_data.crop_size:
            raise ValueError(
                f"data.load_size {cfg_data.load_size} is smaller than data.crop_size {cfg_data.crop_size}: "
                f"preprocess_mode {mode} crops crop_size x crop_size from the load_size image"
            )
    if mode == "fixed" and round(cfg_data.crop_size / cfg_data.aspect_ratio) < 1:
        raise ValueError(f"data.crop_size {cfg_data.crop_size} / aspect_ratio {cfg_data.aspect_ratio} is < 1 pixel")


def scaled_size(cfg_data, height, width):
    """(H, W) after the mode's resize step, before any crop; int32 tensors of the inputs' shape."""
    mode = cfg_data.preprocess_mode
    h = tf.cast(height, tf.int32)
    w = tf.cast(width, tf.int32)
    load = cfg_data.load_size
    if mode == "resize_and_crop":
        return tf.fill(tf.shape(h), load), tf.fill(tf.shape(w), load)
    if mode.startswith("scale_width"):
        return load * h // w, tf.fill(tf.shape(w), load)
    if mode.startswith("scale_shortside"):
        short = tf.minimum(h, w)
        long = load * tf.maximum(h, w) // short
        return tf.where(h <= w, load, long), tf.where(h <= w, long, load)
    if mode == "fixed":
        fh = round(cfg_data.crop_size / cfg_data.aspect_ratio)
        return tf.fill(tf.shape(h), fh), tf.fill(tf.shape(w), cfg_data.crop_size)
    if mode == "none":
        def to_multiple(n):  # tf.round rounds half to even, like the reference's Python round()
            return tf.cast(tf.round(tf.cast(n, tf.float64) / MULTIPLE), tf.int32) * MULTIPLE

        return to_multiple(h), to_multiple(w)
    if mode == "crop":
        return h, w
    raise ValueError(f"unknown data.preprocess_mode {mode!r}; expected one of {', '.join(MODES)}")


def output_size(cfg_data, height: int, width: int):
    """(H, W) of a preprocessed sample whose label map is height x width."""
    if crops(cfg_data.preprocess_mode):
        return cfg_data.crop_size, cfg_data.crop_size
    h, w = scaled_size(cfg_data, np.int32(height), np.int32(width))
    return int(h), int(w)


def too_small(cfg_data, heights, widths) -> np.ndarray:
    """Boolean mask of label sizes the mode cannot turn into a sample (crop larger than the image, or 0 px)."""
    h, w = scaled_size(cfg_data, np.asarray(heights, np.int32), np.asarray(widths, np.int32))
    need = cfg_data.crop_size if crops(cfg_data.preprocess_mode) else 1
    return ((h < need) | (w < need)).numpy()


def static_size(cfg_data):
    """[H, W] of every output when the mode fixes it (crop modes, fixed), else [None, None]."""
    if crops(cfg_data.preprocess_mode):
        return [cfg_data.crop_size] * 2
    if cfg_data.preprocess_mode == "fixed":
        return [round(cfg_data.crop_size / cfg_data.aspect_ratio), cfg_data.crop_size]
    return [None, None]


def _resize(x, size, method):
    """Resizes [H, W, C] to `size`; skipped when the size is already right."""
    same = tf.reduce_all(tf.shape(x)[:2] == size)
    if method == "bicubic":
        x = tf.cast(x, tf.float32)
        return tf.cond(same, lambda: x, lambda: tf.image.resize(x, size, method="bicubic", antialias=True))
    return tf.cond(same, lambda: x, lambda: tf.image.resize(x, size, method="nearest"))


def preprocess(cfg_data, image, label, instance=None, *, seed, training: bool):
    """One sample through the configured mode.

    Args:
        image: [H, W, 3] uint8 (or float in 0..255).
        label: [h, w] integer class ids; the geometry (scale, crop) follows the label's size, and
            image and instance are resized to it, as in the reference.
        instance: [h, w] integer ids or None.
        seed: [2] integer stateless seed for the crop position and the flip.
        training: flip at random unless `cfg_data.no_flip`; never outside training.

    Returns (image float32 [H, W, 3] in [-1, 1], label int32 [H, W], instance int32 [H, W] or None).
    """
    mode = cfg_data.preprocess_mode
    shape = tf.shape(label)
    size = tf.stack(scaled_size(cfg_data, shape[0], shape[1]))
    maps = {
        "image": _resize(image, size, "bicubic"),
        "label": _resize(tf.cast(label, tf.int32)[..., None], size, "nearest"),
    }
    if instance is not None:
        maps["instance"] = _resize(tf.cast(instance, tf.int32)[..., None], size, "nearest")

    y_seed, x_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    if crops(mode):
        c = cfg_data.crop_size
        y = tf.random.stateless_uniform([], y_seed, minval=0, maxval=size[0] - c + 1, dtype=tf.int32)
        x = tf.random.stateless_uniform([], x_seed, minval=0, maxval=size[1] - c + 1, dtype=tf.int32)
        maps = {k: v[y:y + c, x:x + c] for k, v in maps.items()}
    if training and not cfg_data.no_flip:
        flip = tf.random.stateless_uniform([], flip_seed) < 0.5
        maps = {k: tf.cond(flip, lambda v=v: tf.reverse(v, axis=[1]), lambda v=v: v) for k, v in maps.items()}

    static = static_size(cfg_data)
    image = tf.ensure_shape(tf.clip_by_value(maps["image"], 0.0, 255.0) / 127.5 - 1.0, static + [3])
    label = tf.ensure_shape(maps["label"][..., 0], static)
    if instance is not None:
        instance = tf.ensure_shape(maps["instance"][..., 0], static)
    return image, label, instance
