"""The tf.data input pipeline: a dataset's files, or the built-in dataset, as batches of samples.

Batches are dicts {"label": int32 [B, H, W], "image": float32 [B, H, W, 3] in [-1, 1], and
"instance": int32 [B, H, W] unless data.no_instance}. Labels keep their file values (255 stays
255); the trainer turns a batch into the networks' input with `spade_tf.semantics.semantic_input`,
on the accelerator.

Order of operations: file list (checked up front by `datasets.list_files`) -> shard per input
pipeline -> shuffle (training; seeded by data.seed, reshuffled every epoch) -> parallel read,
decode, label-value check and preprocessing (deterministic order; crop and flip drawn from a
per-epoch stateless seed) -> batch (the last partial batch dropped in training) -> prefetch.
One pass is one epoch: the trainer repeats the dataset.

Label values are checked here as each file is decoded: a value outside the label set fails with
an InvalidArgumentError naming the file and the values (data.on_bad_file="stop"), or the sample
is dropped with TF's warning carrying the same message ("skip").
"""

import io

import numpy as np
import tensorflow as tf
from PIL import Image

from spade_tf.data import datasets, preprocess
from spade_tf.semantics import UNKNOWN_LABEL

VAL_SEED_OFFSET = 1_000_003  # the built-in val split: seed data.seed + this
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"


def _palette_indices(contents) -> np.ndarray:
    with Image.open(io.BytesIO(contents)) as im:
        return np.asarray(im, dtype=np.int32)[..., None]


def decode_ids(contents):
    """An encoded single-channel id map -> int32 [H, W] of its raw values.

    8-bit maps give their byte values, 16-bit PNGs (Cityscapes instanceIds) their 16-bit values,
    palette PNGs their palette indices (as PIL reads them; TF's decoder would give colours).
    """
    def png():
        header = tf.io.decode_raw(tf.strings.substr(contents, 24, 2), tf.uint8)  # IHDR bit depth, colour type
        depth, colour = header[0], header[1]
        return tf.cond(
            colour == 3,
            lambda: tf.numpy_function(_palette_indices, [contents], tf.int32, stateful=False),
            lambda: tf.cond(
                depth == 16,
                lambda: tf.cast(tf.io.decode_png(contents, 1, dtype=tf.uint16), tf.int32),
                lambda: tf.cast(tf.io.decode_png(contents, 1), tf.int32),
            ),
        )

    def other():
        return tf.cast(tf.io.decode_image(contents, channels=1, expand_animations=False), tf.int32)

    ids = tf.cond(tf.strings.substr(contents, 0, 8) == PNG_SIGNATURE, png, other)
    return tf.ensure_shape(ids, [None, None, 1])[..., 0]


def decode_photo(contents):
    """An encoded photo -> uint8 [H, W, 3]; JPEGs with the accurate DCT, which matches PIL exactly."""
    return tf.cond(
        tf.strings.substr(contents, 0, 3) == JPEG_SIGNATURE,
        lambda: tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False),
    )


def check_labels(label, path, label_nc: int, contain_dontcare_label: bool):
    """`label` unchanged, or an InvalidArgumentError naming `path` and the values outside the label set."""
    nc = label_nc + int(contain_dontcare_label)
    bad = (label < 0) | (label >= nc)
    expected = f"0..{nc - 1}"
    if contain_dontcare_label:
        bad &= label != UNKNOWN_LABEL
        expected += f" or {UNKNOWN_LABEL} (unknown)"
    else:
        expected += f" ({UNKNOWN_LABEL} is allowed only with data.contain_dontcare_label)"

    def fail():
        values = tf.sort(tf.unique(tf.boolean_mask(label, bad))[0])[:10]
        message = ["label map", path, "has values", values, f"outside the label set; expected {expected}"]
        with tf.control_dependencies([tf.debugging.Assert(False, message, summarize=10)]):
            return tf.identity(label)

    return tf.cond(tf.reduce_any(bad), fail, lambda: label)


def _loader(cfg_data, training: bool, static_size):
    def load(paths, random):
        label_path = paths["label"]
        label = decode_ids(tf.io.read_file(label_path))
        label = check_labels(label, label_path, cfg_data.label_nc, cfg_data.contain_dontcare_label)
        image = decode_photo(tf.io.read_file(paths["image"]))
        instance = decode_ids(tf.io.read_file(paths["instance"])) if "instance" in paths else None
        seed = tf.stack([tf.constant(cfg_data.seed, tf.int64), random])
        image, label, instance = preprocess.preprocess(cfg_data, image, label, instance, seed=seed, training=training)
        sample = {"label": tf.ensure_shape(label, static_size), "image": tf.ensure_shape(image, static_size + [3])}
        if instance is not None:
            sample["instance"] = tf.ensure_shape(instance, static_size)
        return sample

    return load


def _sample_size(cfg_data, samples, batch_size: int):
    """[H, W] every sample has after preprocessing, or [None, None] if it varies (batch 1 only)."""
    static = preprocess.static_size(cfg_data)
    if None not in static:
        return static
    heights, widths = (np.array(v) for v in zip(*(s.size for s in samples)))
    h, w = (t.numpy() for t in preprocess.scaled_size(cfg_data, heights, widths))
    differ = np.flatnonzero((h != h[0]) | (w != w[0]))
    if not differ.size:
        return [int(h[0]), int(w[0])]
    if batch_size > 1:
        i = differ[0]
        raise datasets.DataError(
            f"preprocess_mode {cfg_data.preprocess_mode} makes samples of different sizes, which cannot be "
            f"batched: {samples[0].image} becomes {h[0]}x{w[0]} but {samples[i].image} {h[i]}x{w[i]} (HxW). "
            f"Use preprocess_mode fixed or a *_and_crop mode, or batch size 1"
        )
    return [None, None]


def _files(cfg, split: str, training: bool, pipelines: int, pipeline_id: int, batch_size: int, seed: int):
    d = cfg.data
    samples = datasets.list_files(d, split)
    if training and len(samples) // pipelines < batch_size:
        raise datasets.DataError(
            f"the {split} split has {len(samples)} samples: split over {pipelines} input pipeline(s) that is "
            f"fewer than one batch of {batch_size} per pipeline, and training drops partial batches"
        )
    static_size = _sample_size(d, samples, batch_size)
    columns = {"label": [s.label for s in samples], "image": [s.image for s in samples]}
    if not d.no_instance:
        columns["instance"] = [s.instance for s in samples]
    ds = tf.data.Dataset.from_tensor_slices(columns).shard(pipelines, pipeline_id)
    if training:
        ds = ds.shuffle(d.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = tf.data.Dataset.zip(ds, tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=training))
    ds = ds.map(_loader(d, training, static_size), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if d.on_bad_file == "skip":
        ds = ds.ignore_errors(log_warning=True)
    return ds


def _synthetic(cfg, split: str, training: bool, pipelines: int, pipeline_id: int, seed: int):
    from spade_tf.data.synthetic import synthetic_dataset

    d = cfg.data
    height, width = cfg.image_size
    offset = 0 if datasets.split_folder(split) == "train" else VAL_SEED_OFFSET
    ds = synthetic_dataset(d.synthetic_size, d.seed + offset, height, width, shard=(pipelines, pipeline_id),
                           shuffle_seed=seed if training else None)
    if d.no_instance:
        ds = ds.map(lambda s: {"label": s["label"], "image": s["image"]})
    return ds


def build_dataset(cfg, split: str = "train", input_context=None, batch_size=None) -> tf.data.Dataset:
    """One epoch of batches of `split` ("train", "val" or "test" = val) for one input pipeline.

    `batch_size` defaults to the per-replica batch of `cfg.train.batch_size` under
    `input_context` (a `tf.distribute.InputContext`), else to `cfg.train.batch_size`. With an
    input context, this pipeline reads only its shard (`input_pipeline_id` of `num_input_pipelines`).
    Raises `datasets.DataError` for a dataset that fails the up-front checks.
    """
    training = datasets.split_folder(split) == "train"
    if batch_size is None:
        global_batch = cfg.train.batch_size
        batch_size = input_context.get_per_replica_batch_size(global_batch) if input_context else global_batch
    pipelines, pipeline_id = (
        (input_context.num_input_pipelines, input_context.input_pipeline_id) if input_context else (1, 0)
    )
    seed = cfg.data.seed * 1000 + pipeline_id  # each shard its own order and crops
    if cfg.data.dataset_mode == "synthetic":
        ds = _synthetic(cfg, split, training, pipelines, pipeline_id, seed)
    else:
        ds = _files(cfg, split, training, pipelines, pipeline_id, batch_size, seed)
    ds = ds.batch(batch_size, drop_remainder=training, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def distributed_dataset(strategy, cfg, split: str = "train"):
    """`build_dataset` per input pipeline of `strategy`, each reading its own shard."""
    return strategy.distribute_datasets_from_function(lambda ctx: build_dataset(cfg, split, ctx))
