"""Decoding a sample's files inside tf.data, and naming the file when loading a sample fails.

`datasets.list_files` checks every file's header and end marker up front, but a file damaged in
the middle (a PNG whose IDAT data is broken, a JPEG with a bad marker in its scan) fails only when
TensorFlow decodes it, with an error that does not name the file. `load_batches` catches failures
without Python on the way of a sample: the loaded stream passes through `ignore_errors`, and a
position missing from it is a sample that failed. Only then, once per failed sample, a Python
function finds out why (decoding the sample's files one by one, then loading it again, eagerly), and
the error (or, with data.on_bad_file=skip, the warning) names the file.
"""

import io
import logging
import re

import numpy as np
import tensorflow as tf
from PIL import Image

from spade_tf.data import datasets
from spade_tf_client.contract import UNKNOWN_LABEL, allowed_labels

log = logging.getLogger(__name__)

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


DECODERS = {"label": decode_ids, "image": decode_photo, "instance": decode_ids}


def decode_files(paths: dict) -> dict:
    """{role: path} -> {role: decoded map}: label and instance int32 [H, W], image uint8 [H, W, 3]."""
    return {role: DECODERS[role](tf.io.read_file(path)) for role, path in paths.items()}


def check_labels(label, path, label_nc: int, contain_dontcare_label: bool):
    """`label` unchanged, or an InvalidArgumentError naming `path` and the values outside the label set."""
    nc = label_nc + int(contain_dontcare_label)
    bad = (label < 0) | (label >= nc)  # the export contract's label-value rule, in TensorFlow
    if contain_dontcare_label:
        bad &= label != UNKNOWN_LABEL
    expected = allowed_labels(label_nc, contain_dontcare_label)
    if not contain_dontcare_label:
        expected += "; it is allowed only with data.contain_dontcare_label"

    def fail():
        values = tf.sort(tf.unique(tf.boolean_mask(label, bad))[0])[:10]
        message = ["label map", path, "has values", values, f"outside the label set; expected {expected}"]
        if tf.executing_eagerly():  # `describe_failure` loads eagerly: the graph Assert's message, not eager's
            raise tf.errors.InvalidArgumentError(None, None, "assertion failed: " + " ".join(
                f"[{_summary(part)}]" for part in message))
        with tf.control_dependencies([tf.debugging.Assert(False, message, summarize=10)]):
            return tf.identity(label)

    return tf.cond(tf.reduce_any(bad), fail, lambda: label)


def _summary(part) -> str:
    """One item of an Assert's data as the graph op prints it: a string as it is, a vector as [1 2 3]."""
    if isinstance(part, str):
        return part
    value = part.numpy()
    if isinstance(value, bytes):
        return value.decode()
    return " ".join(str(v) for v in value.ravel())


def _reason(error: tf.errors.OpError) -> str:
    """TF's error message without the node, op and traceback around it."""
    message = error.message.split("\n\t [[")[0].split("\n\n")[-1]
    message = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\].*|^\s*assertion failed: ", "", message, flags=re.S).strip()
    return message or type(error).__name__


def describe_failure(paths: dict, load=None) -> str:
    """Why the sample of `paths` ({role: path}) failed to load: the first file that cannot be read or
    decoded, else the error of `load()` (the sample's whole loading, run again).

    Runs eagerly inside the pipeline's `tf.py_function`, and must stay eager: a `tf.function` called
    there needs a second inter-op thread while the pipeline's function holds one, and hangs at 0 % CPU
    when the pool's threads (as many as the CPU cores) are all taken (tensorflow/tensorflow#32454)."""
    for role, path in paths.items():
        try:
            decode_files({role: path})
        except tf.errors.OpError as error:
            return (
                f"{role} {path} cannot be read or decoded ({_reason(error)}); "
                f"expected a complete, undamaged {'/'.join(datasets.FORMATS)} file"
            )
    files = ", ".join(f"{role} {path}" for role, path in paths.items())
    try:
        if load is not None:
            load()
    except tf.errors.OpError as error:
        return f"{_reason(error)} (sample: {files})"
    return f"loading the sample ({files}) failed, but its files read and decode when tried again"


def load_batches(order, load, paths: dict, batch_size: int, drop_remainder: bool, on_bad_file: str):
    """Batches of `load(position, index)` (a sample dict) along `order` (an `order.SampleOrder`),
    mapped in parallel, in order. A sample that fails to load fails with a message naming the file
    (on_bad_file "stop") or is dropped with a warning naming it ("skip").

    `paths`: {role: list of every sample's path}. A failed sample is a position missing after
    `ignore_errors`: a sequential scan follows the positions, and only at a gap does Python run, once
    per gap, to find out why (`describe_failure`). The scan moves past the gap whatever the outcome, so
    that no later element runs Python again: a Python call still running in a background thread of
    the pipeline when its iterator is deleted (after the error, say) can hang the process.
    """
    def describe_missing(expected, position):
        messages = []
        for q in range(int(expected), int(position)):
            index = order.index_at(q)
            sample_paths = {role: column[index] for role, column in paths.items()}
            messages.append(describe_failure(sample_paths, lambda: load(tf.constant(q, tf.int64), index)))
            if on_bad_file == "skip":
                log.warning("skipping a sample: %s", messages[-1])
        return messages[0]

    def follow(expected, element):
        """(next expected position, (position, "" or why the samples before it are missing, sample))."""
        position, sample = element
        missing = tf.cond(position == expected, lambda: tf.constant(""),
                          lambda: tf.py_function(describe_missing, [expected, position], tf.string))
        return position + 1, (position, missing, sample)

    def stop_at_failure(position, missing, sample):
        with tf.control_dependencies([tf.debugging.Assert(tf.equal(missing, ""), [missing])]):
            return tf.identity(position), tf.nest.map_structure(tf.identity, sample)

    start, stop = order.start, order.stop
    ds = order.positions().map(lambda q, i: (q, load(q, i)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors()
    if stop is not None:  # one more element after the last, so that failures at the end are seen too
        end = tf.nest.map_structure(lambda s: tf.zeros([d or 0 for d in s.shape], s.dtype), ds.element_spec[1])
        ds = ds.concatenate(tf.data.Dataset.from_tensors((tf.constant(stop, tf.int64), end)))
    ds = ds.scan(tf.constant(start, tf.int64), follow)
    if on_bad_file == "skip":  # describe_missing has logged the warning
        ds = ds.map(lambda position, missing, sample: (position, sample))
    else:
        ds = ds.map(stop_at_failure)
    if stop is not None:
        ds = ds.filter(lambda position, sample: position < stop)
    ds = ds.batch(batch_size, drop_remainder, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.map(lambda positions, samples: samples)
    if stop is not None and on_bad_file != "skip":  # every sample is there (or the stream fails)
        batches = (stop - start) // batch_size if drop_remainder else -(-(stop - start) // batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    return ds
