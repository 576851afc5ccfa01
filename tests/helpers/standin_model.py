"""A tiny stand-in SavedModel that follows the export contract (spade_tf/export/module.py).

It has the contract's signatures, dtypes, shapes, `assets.extra/labels.json` and warm-up file, and
checkable outputs instead of a generator:
- `serving_default`: image = palette[label] + uniform random integers in [0, 8) per channel;
- `with_seed`: image = palette[label] + `seeded_noise(seed, H, W)`;
- `with_z` (VAE): image = palette[label] + round(7 * clip(z[:, 0], 0, 1));
- `encode_style` (VAE): mu = per-channel mean of image / 255 padded with zeros to 256, z = mu, logvar = 0;
- with instance maps, pixels on an instance boundary are white (255);
- with a don't-care label, 255 (or label_nc) pixels are black.
Bad labels and sizes fail inside the graph with InvalidArgumentError, as the contract asks.
"""

import atexit
import json
import os
import pathlib
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

Z_DIM = 256
SIZE_MULTIPLE = 8

_saved = {}  # stand-in options -> a saved copy, so tests pay tf.saved_model.save once per kind


def palette(label_nc):
    """Distinct colours, every channel in [20, 220) so that noise never clips."""
    i = np.arange(label_nc)
    return np.stack([(37 * i + 40) % 200 + 20, (91 * i + 80) % 200 + 20, (53 * i + 120) % 200 + 20],
                    axis=1).astype(np.uint8)


def seeded_noise(seed, height, width):
    """The `with_seed` noise for one seed: int array [H, W, 3] in [0, 8)."""
    y, x, c = np.meshgrid(np.arange(height), np.arange(width), np.arange(3), indexing="ij")
    return (int(seed) * 7 + 3 * y + 5 * x + c) % 8


def instance_edges(instance_map):
    """Pixels whose instance id differs from a 4-neighbour's, as a bool array of the same shape."""
    inst = np.asarray(instance_map)
    edge = np.zeros(inst.shape, bool)
    dx = inst[..., :, 1:] != inst[..., :, :-1]
    dy = inst[..., 1:, :] != inst[..., :-1, :]
    edge[..., :, 1:] |= dx
    edge[..., :, :-1] |= dx
    edge[..., 1:, :] |= dy
    edge[..., :-1, :] |= dy
    return edge


def write_standin_model(base_path, version, use_vae=False, use_instance=False,
                        contain_dontcare_label=False, label_nc=4, size=(32, 32)):
    """Write `<base_path>/<version>/` atomically (temp folder, then rename); returns that path."""
    key = (use_vae, use_instance, contain_dontcare_label, label_nc, tuple(size))
    if key not in _saved:
        cache = pathlib.Path(tempfile.mkdtemp(prefix="spade-standin-"))
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
        _save(cache / "model", *key)
        _saved[key] = cache / "model"
    base_path = pathlib.Path(base_path)
    base_path.mkdir(parents=True, exist_ok=True)
    tmp = base_path / f".tmp-{version}-{os.getpid()}"
    shutil.copytree(_saved[key], tmp)
    final = base_path / str(version)
    os.rename(tmp, final)
    return final


def _save(path, use_vae, use_instance, contain_dontcare_label, label_nc, size):
    height, width = size
    colours = palette(label_nc).astype(np.int32)
    if contain_dontcare_label:
        colours = np.concatenate([colours, np.zeros((1, 3), np.int32)])  # 255 -> black
    colours = tf.constant(colours)

    def render(label_map, instance_map, noise):
        labels = tf.cast(label_map, tf.int32)
        shape = tf.shape(labels)
        # 255 and the unknown index itself (label_nc) mean "unknown", as in the real export's graph
        known = (labels != 255) & (labels != label_nc) if contain_dontcare_label else tf.ones_like(labels, tf.bool)
        checks = [
            tf.debugging.assert_less(tf.where(known, labels, 0), label_nc,
                                     message=f"label_map values must be < label_nc {label_nc}"),
            tf.debugging.assert_equal(shape[1:] % SIZE_MULTIPLE, 0,
                                      message=f"height and width must be multiples of {SIZE_MULTIPLE}"),
            tf.debugging.assert_equal(  # SPADE's rule: height blocks = round(width blocks / aspect ratio)
                tf.round(tf.cast(shape[2] // SIZE_MULTIPLE, tf.float64) / (width / height)),
                tf.cast(shape[1] // SIZE_MULTIPLE, tf.float64), message=f"width / height must be {width / height}"),
        ]
        with tf.control_dependencies(checks):
            if contain_dontcare_label:
                labels = tf.where(known, labels, label_nc)
            image = tf.gather(colours, labels) + noise
        if instance_map is not None:
            image = tf.where(_edges(instance_map)[..., None], 255, image)
        return {"image": tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)}

    hw = [height, width] if use_vae else [None, None]
    label_spec = tf.TensorSpec([None, *hw], tf.uint8)
    instance_spec = tf.TensorSpec([None, *hw], tf.int32)
    seed_spec = tf.TensorSpec([None], tf.int64)
    z_spec = tf.TensorSpec([None, Z_DIM], tf.float32)
    if use_instance:
        signatures = {
            "serving_default": tf.function(
                lambda label_map, instance_map: render(label_map, instance_map, _random_noise(label_map)),
                input_signature=[label_spec, instance_spec]),
            "with_seed": tf.function(
                lambda label_map, instance_map, seed: render(label_map, instance_map,
                                                             _seed_noise(label_map, seed)),
                input_signature=[label_spec, instance_spec, seed_spec]),
            "with_z": tf.function(
                lambda label_map, instance_map, z: render(label_map, instance_map, _z_noise(z)),
                input_signature=[label_spec, instance_spec, z_spec]),
        }
    else:
        signatures = {
            "serving_default": tf.function(
                lambda label_map: render(label_map, None, _random_noise(label_map)),
                input_signature=[label_spec]),
            "with_seed": tf.function(
                lambda label_map, seed: render(label_map, None, _seed_noise(label_map, seed)),
                input_signature=[label_spec, seed_spec]),
            "with_z": tf.function(
                lambda label_map, z: render(label_map, None, _z_noise(z)),
                input_signature=[label_spec, z_spec]),
        }

    if use_vae:
        signatures["encode_style"] = tf.function(
            _encode_style, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    else:
        del signatures["with_z"]

    module = tf.Module()
    module.fns = signatures  # tracked so that the functions are saved
    tf.saved_model.save(module, str(path), signatures={k: f.get_concrete_function() for k, f in signatures.items()})

    _write_assets(path / "assets.extra", sorted(signatures), use_vae, use_instance, contain_dontcare_label, label_nc,
                  size)


def _write_assets(extra, signatures, use_vae, use_instance, contain_dontcare_label, label_nc, size):
    """labels.json and one warm-up request, as the real export writes them."""
    height, width = size
    extra.mkdir()
    labels = {
        "model_name": "spade", "class_names": [f"class{i}" for i in range(label_nc)],
        "palette": palette(label_nc).tolist(), "label_nc": label_nc,
        "contain_dontcare_label": contain_dontcare_label,
        "unknown_label": 255 if contain_dontcare_label else None,
        "use_instance": use_instance, "use_vae": use_vae, "z_dim": Z_DIM,
        "image_size": [height, width], "size_multiple": SIZE_MULTIPLE, "aspect_ratio": width / height,
        "signatures": signatures,
    }
    (extra / "labels.json").write_text(json.dumps(labels, indent=1))
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="spade"))
    request.inputs["label_map"].CopyFrom(tf.make_tensor_proto(np.zeros((1, height, width), np.uint8)))
    if use_instance:
        request.inputs["instance_map"].CopyFrom(tf.make_tensor_proto(np.zeros((1, height, width), np.int32)))
    with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as writer:
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        writer.write(log.SerializeToString())


def _random_noise(label_map):
    return tf.random.uniform(tf.concat([tf.shape(label_map), [3]], 0), 0, 8, tf.int32)


def _seed_noise(label_map, seed):
    shape = tf.shape(label_map, out_type=tf.int64)
    y = tf.range(shape[1])[None, :, None, None]
    x = tf.range(shape[2])[None, None, :, None]
    c = tf.range(3, dtype=tf.int64)[None, None, None, :]
    return tf.cast((seed[:, None, None, None] * 7 + 3 * y + 5 * x + c) % 8, tf.int32)


def _z_noise(z):
    return tf.cast(tf.round(7 * tf.clip_by_value(z[:, 0], 0, 1)), tf.int32)[:, None, None, None]


def _encode_style(image):
    mu = tf.pad(tf.reduce_mean(tf.cast(image, tf.float32) / 255.0, axis=[1, 2]), [[0, 0], [0, Z_DIM - 3]])
    return {"z": mu, "mu": mu, "logvar": tf.zeros_like(mu)}


def _edges(instance_map):
    dx = instance_map[:, :, 1:] != instance_map[:, :, :-1]
    dy = instance_map[:, 1:, :] != instance_map[:, :-1, :]
    no_col = tf.zeros_like(dx[:, :, :1])
    no_row = tf.zeros_like(dy[:, :1, :])
    return (tf.concat([no_col, dx], 2) | tf.concat([dx, no_col], 2)
            | tf.concat([no_row, dy], 1) | tf.concat([dy, no_row], 1))


def write_slow_model(base_path, version=1):
    """A SavedModel whose one signature takes `label_map` uint8 [B, H, W] and `milliseconds` int64 [B],
    sleeps the largest of those (inside TensorFlow, where Python cannot interrupt it), and answers
    `image` uint8 [B, H, W, 3] of zeros: a stand-in for a large request that computes for a long time."""
    from tensorflow.python.data.experimental.ops.testing import sleep  # the dataset op TF's own tests use

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.uint8), tf.TensorSpec([None], tf.int64)])
    def slow(label_map, milliseconds):
        wait = tf.data.Dataset.from_tensors(0).apply(sleep(tf.reduce_max(milliseconds) * 1000))
        with tf.control_dependencies([wait.reduce(0, lambda total, x: total + x)]):
            return {"image": tf.zeros(tf.concat([tf.shape(label_map), [3]], 0), tf.uint8)}

    module = tf.Module()
    module.slow = slow
    path = pathlib.Path(base_path) / str(version)
    tf.saved_model.save(module, str(path), signatures={"serving_default": slow.get_concrete_function()})
    return path
