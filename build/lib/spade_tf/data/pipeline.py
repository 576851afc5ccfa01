"""The tf.data input pipeline: a dataset's files, or the built-in dataset, as batches of samples.

Batches are dicts {"label": int32 [B, H, W], "image": float32 [B, H, W, 3] in [-1, 1], and
"instance": int32 [B, H, W] unless data.no_instance}. Labels keep their file values (255 stays
255); the trainer turns a batch into the networks' input with `spade_tf.semantics.semantic_input`,
on the accelerator.

Order of operations: file list (checked up front by `datasets.list_files`) -> the positions of
this input pipeline's stream and the sample read at each (`order.SampleOrder`: its shard,
shuffled per epoch from data.seed in training; a stream can start at any step without reading
the samples before it) -> parallel read, decode, label-value check and preprocessing
(deterministic order; crop and flip drawn from a stateless seed keyed by the position) -> batch
(each training epoch ends on its last whole batch) -> prefetch.

A sample that fails to load, a file TF cannot decode or a label value outside the label set,
fails with an InvalidArgumentError naming the file (data.on_bad_file="stop"), or is dropped with
a warning naming it ("skip"): `decode.load_batches`.
"""

import numpy as np
import tensorflow as tf

from spade_tf.data import datasets, decode, preprocess
from spade_tf.data.order import SampleOrder

VAL_SEED_OFFSET = 1_000_003  # the built-in val split: seed data.seed + this


def _loader(cfg_data, training: bool, static_size, order: SampleOrder, paths: dict):
    def load(position, index):
        files = decode.decode_files({role: tf.gather(column, index) for role, column in paths.items()})
        label = decode.check_labels(
            files["label"], tf.gather(paths["label"], index), cfg_data.label_nc, cfg_data.contain_dontcare_label
        )
        seed = tf.stack([tf.constant(order.seed, tf.int64), position])
        image, label, instance = preprocess.preprocess(
            cfg_data, files["image"], label, files.get("instance"), seed=seed, training=training
        )
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


def _files(cfg, samples, order: SampleOrder, batch_size: int, training: bool):
    d = cfg.data
    static_size = _sample_size(d, samples, batch_size)
    columns = {"label": [s.label for s in samples], "image": [s.image for s in samples]}
    if not d.no_instance:
        columns["instance"] = [s.instance for s in samples]
    load = _loader(d, training, static_size, order, {role: tf.constant(column) for role, column in columns.items()})
    return decode.load_batches(order, load, columns, batch_size, training, d.on_bad_file)


def _synthetic(cfg, split: str, order: SampleOrder):
    from spade_tf.data.synthetic import sample_fn

    d = cfg.data
    offset = 0 if datasets.split_folder(split) == "train" else VAL_SEED_OFFSET
    draw = sample_fn(d.seed + offset, *cfg.image_size)
    keys = ("label", "image") if d.no_instance else ("label", "image", "instance")

    def sample(position, index):
        drawn = draw(index)
        return {k: drawn[k] for k in keys}

    return order.positions().map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def build_dataset(
    cfg, split: str = "train", input_context=None, batch_size=None, repeat: bool = False, start_step: int = 0
) -> tf.data.Dataset:
    """Batches of `split` ("train", "val" or "test" = val) for one input pipeline: one epoch, or
    with `repeat` epoch after epoch without end (each shuffled anew in training).

    `batch_size` defaults to the per-replica batch of `cfg.train.batch_size` under
    `input_context` (a `tf.distribute.InputContext`), else to `cfg.train.batch_size`. With an
    input context, this pipeline reads only its shard (`input_pipeline_id` of `num_input_pipelines`).
    `start_step`: the stream starts where a run that has taken that many steps is, each step
    reading one batch per local replica of this pipeline (a tf.distribute strategy hands a
    pipeline's batches to its local replicas in turn); the samples before it are not read. Without
    `repeat` the stream ends with that step's epoch.
    Raises `datasets.DataError` for a dataset that fails the up-front checks.
    """
    training = datasets.split_folder(split) == "train"
    if batch_size is None:
        global_batch = cfg.train.batch_size
        batch_size = input_context.get_per_replica_batch_size(global_batch) if input_context else global_batch
    pipelines, pipeline_id, local_replicas = (1, 0, 1)
    if input_context:
        pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
        local_replicas = input_context.num_replicas_in_sync // pipelines
    synthetic = cfg.data.dataset_mode == "synthetic"
    samples = None if synthetic else datasets.list_files(cfg.data, split)
    num_samples = cfg.data.synthetic_size if synthetic else len(samples)
    if training and num_samples // pipelines < batch_size:
        raise datasets.DataError(
            f"the {split} split has {num_samples} samples: split over {pipelines} input pipeline(s) that is "
            f"fewer than one batch of {batch_size} per pipeline, and training drops partial batches"
        )
    seed = cfg.data.seed * 1000 + pipeline_id  # each shard its own order and crops
    order = SampleOrder(num_samples, batch_size, seed, training, (pipelines, pipeline_id),
                        start_batch=start_step * local_replicas, repeat=repeat)
    if synthetic:
        ds = _synthetic(cfg, split, order)
        ds = ds.batch(batch_size, drop_remainder=training, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = _files(cfg, samples, order, batch_size, training)
    return ds.prefetch(tf.data.AUTOTUNE)


def distributed_dataset(strategy, cfg, split: str = "train"):
    """`build_dataset` per input pipeline of `strategy`, each reading its own shard."""
    return strategy.distribute_datasets_from_function(lambda ctx: build_dataset(cfg, split, ctx))
