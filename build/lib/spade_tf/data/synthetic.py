"""The built-in dataset: procedural landscapes drawn on the fly from a seed, no download needed.

Each sample is a layout (label map + instance map) and its photo. A horizon splits sky from
ground; mountains rise above it, a lake and a road lie below it, and buildings, trees and cars
(the "object" class) stand on the ground, nearer ones in front. Every class has its own colours
and texture (a sky gradient, mountain shading, water ripples, grass grain, leafy clumps, window
grids, asphalt grain), so a GAN trained for minutes visibly learns layout -> appearance and a
non-learned segmenter (`spade_tf.data.segmenter`) recovers the layout from the photo.

Sample `index` of `seed` depends on nothing else: every random draw is a stateless TF op keyed by
(seed, index), so samples are the same in any order, shard or process. Positions are drawn in
units of the image height, so a sample keeps its layout at any resolution of the same aspect
ratio. The generator is pure TF, so `synthetic_dataset` parallelises with `num_parallel_calls`.
"""

import math

import numpy as np
import tensorflow as tf

SYNTHETIC_CLASSES = ["sky", "mountain", "water", "grass", "tree", "building", "road", "object"]
SKY, MOUNTAIN, WATER, GRASS, TREE, BUILDING, ROAD, OBJECT = range(8)
THING_CLASSES = (TREE, BUILDING, OBJECT)  # classes whose instances get ids class * 1000 + k (k >= 1)

# The colours each class is drawn with: (dark, light) RGB pairs; a pixel's texture value t in
# [0, 1] picks its colour on the line between them, then a per-sample shift of up to JITTER per
# channel and pixel noise of std NOISE are added. The lines of different classes are >= 52 apart,
# which is what lets the reference segmenter tell the classes apart by colour alone.
CLASS_COLORS = [
    [((70, 130, 210), (180, 210, 240))],  # sky: zenith -> horizon
    [((115, 85, 130), (165, 135, 175))],  # mountain
    [((15, 55, 105), (45, 100, 150))],  # water: trough -> crest of a ripple
    [((90, 150, 40), (140, 190, 70))],  # grass
    [((15, 80, 20), (40, 120, 35))],  # tree
    [((175, 130, 90), (220, 180, 130)), ((90, 45, 15), (120, 65, 25))],  # building: wall, window
    [((40, 40, 42), (70, 70, 72))],  # road
    [((170, 20, 25), (235, 50, 45)), ((200, 170, 10), (250, 220, 40)), ((170, 30, 170), (230, 70, 220))],  # cars
]
JITTER = 8.0
NOISE = 3.0

_SEGMENT_CLASS = [c for c, colors in enumerate(CLASS_COLORS) for _ in colors]
_FIRST_SEGMENT = [sum(len(colors) for colors in CLASS_COLORS[:c]) for c in range(len(CLASS_COLORS))]
_DARK = np.array([dark for colors in CLASS_COLORS for dark, _ in colors], np.float32)
_LIGHT = np.array([light for colors in CLASS_COLORS for _, light in colors], np.float32)
WALL, WINDOW = _FIRST_SEGMENT[BUILDING], _FIRST_SEGMENT[BUILDING] + 1


class _Draws:
    """Stateless random draws keyed by (seed, index): the n-th draw is the same wherever it runs."""

    def __init__(self, seed, index):
        self._key = tf.stack([tf.cast(seed, tf.int64), tf.cast(index, tf.int64)])
        self._count = 0

    def _next_key(self):
        self._count += 1
        return tf.random.experimental.stateless_fold_in(self._key, self._count)

    def uniform(self, shape, low=0.0, high=1.0):
        return tf.random.stateless_uniform(shape, self._next_key(), low, high)

    def normal(self, shape):
        return tf.random.stateless_normal(shape, self._next_key())

    def value_noise(self, height, width, cells):
        """Smooth noise in about [-1, 1] with `cells` random values per image height."""
        grid = self.uniform([cells + 1, math.ceil(cells * width / height) + 1, 1], -1.0, 1.0)
        return tf.image.resize(grid, [height, width], method="bicubic")[..., 0]


def _nearest(masks, depth):
    """[K, H, W] instance masks + [K] depths -> (any mask, index of the nearest instance) per pixel."""
    key = tf.where(masks, depth[:, None, None], -1.0)
    return tf.reduce_any(masks, axis=0), tf.argmax(key, axis=0, output_type=tf.int32)


def _pick(per_instance, k):
    """Per-pixel value of the instance `k` picks, from [K, H, W] maps or [K] values."""
    per_instance = tf.convert_to_tensor(per_instance)
    if per_instance.shape.rank == 1:
        return tf.gather(per_instance, k)
    onehot = tf.one_hot(k, tf.shape(per_instance)[0], axis=0, dtype=per_instance.dtype)
    return tf.reduce_sum(onehot * per_instance, axis=0)


def _landscape(index, seed, height: int, width: int):
    """One sample as TF tensors: label int32 [H, W], instance int32 [H, W], image uint8 [H, W, 3]."""
    r = _Draws(seed, index)
    aspect = width / height
    y = (tf.range(height, dtype=tf.float32)[:, None] + 0.5) / height  # [H, 1], in image heights
    x = (tf.range(width, dtype=tf.float32)[None, :] + 0.5) / height  # [1, W]
    shape = [height, width]
    grain = r.uniform(shape, -1.0, 1.0)  # per-pixel texture
    horizon = r.uniform([], 0.38, 0.6)
    below = (y - horizon) / (1.0 - horizon)  # 0 at the horizon, 1 at the bottom

    # The canvas: (label, instance, colour segment, texture value) per pixel; layers paint over it.
    canvas = [
        tf.fill(shape, SKY),
        tf.zeros(shape, tf.int32),
        tf.fill(shape, _FIRST_SEGMENT[SKY]),
        tf.clip_by_value(y / horizon + 0.04 * r.value_noise(height, width, 3), 0.0, 1.0),
    ]

    def paint(mask, label, instance, segment, shade):
        mask = tf.broadcast_to(mask, shape)
        new = (label, instance, segment, shade)
        for i, (old, value) in enumerate(zip(canvas, new)):
            canvas[i] = tf.where(mask, tf.broadcast_to(tf.cast(value, old.dtype), shape), old)

    # Mountains: a ridge of three sines above the horizon, lighter towards the peaks.
    amplitude = r.uniform([], 0.1, 0.35) * tf.cast(r.uniform([]) < 0.9, tf.float32)
    freqs, phases = r.uniform([3, 1, 1], 2.0, 10.0), r.uniform([3, 1, 1], 0.0, 2 * math.pi)
    ridge = tf.reduce_sum(tf.constant([1.0, 0.5, 0.25])[:, None, None] * tf.sin(freqs * x + phases), 0) / 1.75
    skyline = horizon - amplitude * (0.6 + 0.4 * ridge)
    rise = (horizon - y) / (amplitude + 1e-6)
    paint(
        (y >= skyline) & (y < horizon), MOUNTAIN, 0, _FIRST_SEGMENT[MOUNTAIN],
        tf.clip_by_value(0.2 + 0.5 * rise + 0.2 * r.value_noise(height, width, 10), 0.0, 1.0),
    )

    # Grass everywhere below the horizon.
    paint(
        y >= horizon, GRASS, 0, _FIRST_SEGMENT[GRASS],
        tf.clip_by_value(0.5 + 0.25 * grain + 0.25 * r.value_noise(height, width, 6), 0.0, 1.0),
    )

    # A lake: a wobbly half-ellipse on the horizon, with horizontal ripples.
    lake_x, lake_rx = aspect * r.uniform([], 0.1, 0.9), aspect * r.uniform([], 0.2, 0.45)
    lake_ry, lake_phase = r.uniform([], 0.08, 0.3), r.uniform([], 0.0, 2 * math.pi)
    wobble = 1.0 + 0.1 * tf.sin(9.0 * x + lake_phase)
    in_lake = ((x - lake_x) / lake_rx) ** 2 + ((y - horizon) / lake_ry) ** 2 < wobble**2
    ripple = 2 * math.pi * (y - horizon) / max(3.0 / height, 0.02)
    paint(
        (r.uniform([]) < 0.8) & (y >= horizon) & in_lake, WATER, 0, _FIRST_SEGMENT[WATER],
        tf.clip_by_value(0.5 + 0.4 * tf.sin(ripple + 1.5 * r.value_noise(height, width, 8)), 0.0, 1.0),
    )

    # A road from a vanishing point on the horizon, widening towards the viewer.
    has_road = r.uniform([]) < 0.8
    road_top, road_bottom = aspect * r.uniform([], 0.25, 0.75), aspect * r.uniform([], 0.1, 0.9)
    road_width = r.uniform([], 0.1, 0.25)

    def road_centre(t):
        return road_top + t * (road_bottom - road_top)

    def road_half_width(t):
        return 0.005 + t * road_width

    paint(
        has_road & (y >= horizon) & (tf.abs(x - road_centre(below)) < road_half_width(below)),
        ROAD, 0, _FIRST_SEGMENT[ROAD],
        tf.clip_by_value(0.25 + 0.35 * below + 0.2 * grain, 0.0, 1.0),
    )

    # Buildings standing just below the horizon, with a grid of windows.
    k = 3
    present = r.uniform([k]) < tf.constant([0.85, 0.6, 0.35])
    left, bwidth = aspect * r.uniform([k], -0.05, 0.95), r.uniform([k], 0.1, 0.28)
    base, bheight = horizon + r.uniform([k], 0.0, 0.1), r.uniform([k], 0.15, 0.4)
    left, bwidth, base, bheight = (v[:, None, None] for v in (left, bwidth, base, bheight))
    masks = present[:, None, None] & (x >= left) & (x < left + bwidth) & (y >= base - bheight) & (y < base)
    period = max(4.0 / height, 0.05)
    column, floor = ((x - left) / period) % 1.0, ((base - y) / period) % 1.0
    windows = (column >= 0.3) & (column < 0.75) & (floor >= 0.35) & (floor < 0.8)
    wall_shade = r.uniform([k], 0.1, 0.9)
    mask, nearest = _nearest(masks, base[:, 0, 0])
    window = _pick(tf.cast(windows, tf.float32), nearest) > 0.5
    paint(
        mask, BUILDING, BUILDING * 1000 + 1 + nearest, tf.where(window, WINDOW, WALL),
        tf.clip_by_value(tf.where(window, 0.5 + 0.3 * grain, _pick(wall_shade, nearest) + 0.08 * grain), 0.0, 1.0),
    )

    # Trees: wobbly blobs near the horizon, bigger when nearer, with leafy clumps.
    k = 5
    present = r.uniform([k]) < tf.constant([0.9, 0.75, 0.6, 0.45, 0.3])
    cx, cy = aspect * r.uniform([k]), horizon + r.uniform([k], -0.06, 0.2)
    radius = r.uniform([k], 0.035, 0.09) * (1.0 + 2.0 * (cy - horizon + 0.06))
    phase1, phase2 = r.uniform([k, 1, 1], 0.0, 2 * math.pi), r.uniform([k, 1, 1], 0.0, 2 * math.pi)
    cx, cy, radius = (v[:, None, None] for v in (cx, cy, radius))
    dx, dy = (x - cx) / radius, (y - cy) / (1.3 * radius)
    angle = tf.atan2(dy, dx)
    outline = 1.0 + 0.12 * tf.sin(5.0 * angle + phase1) + 0.06 * tf.sin(9.0 * angle + phase2)
    masks = present[:, None, None] & (dx**2 + dy**2 < outline**2)
    mask, nearest = _nearest(masks, (cy + 1.3 * radius)[:, 0, 0])
    paint(
        mask, TREE, TREE * 1000 + 1 + nearest, _FIRST_SEGMENT[TREE],
        tf.clip_by_value(0.5 + 0.45 * r.value_noise(height, width, 30) + 0.1 * grain, 0.0, 1.0),
    )

    # Cars: on the road when there is one, bigger when nearer; a body and a lighter cabin.
    k = 4
    present = r.uniform([k]) < tf.constant([0.9, 0.7, 0.5, 0.3])
    t = r.uniform([k], 0.12, 0.95)
    bottom = horizon + t * (1.0 - horizon)
    car_width = (0.08 + 0.2 * t) * r.uniform([k], 0.85, 1.15)
    on_road = road_centre(t) + r.uniform([k], -0.7, 0.7) * road_half_width(t)
    centre = tf.where(has_road, on_road, aspect * r.uniform([k], 0.05, 0.95))
    color = _FIRST_SEGMENT[OBJECT] + tf.cast(r.uniform([k]) * len(CLASS_COLORS[OBJECT]), tf.int32)
    left, bottom, car_width = (v[:, None, None] for v in (centre - car_width / 2, bottom, car_width))
    body = (x >= left) & (x < left + car_width) & (y >= bottom - 0.35 * car_width) & (y < bottom)
    cabin = (
        (x >= left + 0.2 * car_width) & (x < left + 0.8 * car_width)
        & (y >= bottom - 0.6 * car_width) & (y < bottom - 0.35 * car_width)
    )
    mask, nearest = _nearest(present[:, None, None] & (body | cabin), bottom[:, 0, 0])
    in_cabin = _pick(tf.cast(cabin, tf.float32), nearest) > 0.5
    paint(
        mask, OBJECT, OBJECT * 1000 + 1 + nearest, tf.gather(color, nearest),
        tf.clip_by_value(tf.where(in_cabin, 0.85, 0.45) + 0.08 * grain, 0.0, 1.0),
    )

    # The photo: each pixel's colour on its segment, shifted per sample, plus pixel noise.
    label, instance, segment, shade = canvas
    jitter = r.uniform([len(_SEGMENT_CLASS), 3], -JITTER, JITTER)
    dark = tf.gather(tf.constant(_DARK) + jitter, segment)
    light = tf.gather(tf.constant(_LIGHT) + jitter, segment)
    rgb = dark + shade[..., None] * (light - dark) + NOISE * r.normal([height, width, 3])
    image = tf.cast(tf.round(tf.clip_by_value(rgb, 0.0, 255.0)), tf.uint8)
    return label, instance, image


def _check_size(height, width):
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"synthetic {name} must be a positive integer number of pixels, got {value!r}")


@tf.function
def _landscape_fn(index, seed, height, width):
    return _landscape(index, seed, height, width)


def synthetic_sample(index: int, seed: int, height: int, width: int) -> dict:
    """Sample `index` of `seed` as NumPy: label uint8 [H, W], instance int32 [H, W], image uint8 [H, W, 3]."""
    _check_size(height, width)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"synthetic sample index must be a non-negative integer, got {index!r}")
    label, instance, image = _landscape_fn(
        tf.constant(index, tf.int64), tf.constant(seed, tf.int64), int(height), int(width)
    )
    return {"label": label.numpy().astype(np.uint8), "instance": instance.numpy(), "image": image.numpy()}


def sample_fn(seed: int, height: int, width: int):
    """A TF function int64 index -> sample `index` of `seed` as a dataset element (see `synthetic_dataset`)."""
    _check_size(height, width)
    seed = tf.constant(seed, tf.int64)

    def draw(index):
        label, instance, image = _landscape(index, seed, int(height), int(width))
        return {"label": label, "instance": instance, "image": tf.cast(image, tf.float32) / 127.5 - 1.0}

    return draw


def synthetic_dataset(num_samples: int, seed: int, height: int, width: int) -> tf.data.Dataset:
    """Samples 0..num_samples-1 of `seed`, in order, one per element, not batched, not shuffled.

    Elements: {"label": int32 [H, W], "instance": int32 [H, W], "image": float32 [H, W, 3] in [-1, 1]};
    the image is `synthetic_sample`'s uint8 photo scaled by 1/127.5 - 1, as a photo read from disk.
    The input pipeline draws the samples of its own order with `sample_fn`.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 0:
        raise ValueError(f"num_samples must be a non-negative integer, got {num_samples!r}")
    draw = sample_fn(seed, height, width)
    return tf.data.Dataset.range(num_samples).map(draw, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
