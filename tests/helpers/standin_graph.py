"""A stand-in for the 2015 Inception graph (classify_image_graph_def.pb), small and with known features."""

import pathlib

import numpy as np
import tensorflow as tf

STANDIN_FEATURES = 16
STANDIN_WEIGHTS = np.random.default_rng(7).standard_normal((3, STANDIN_FEATURES)).astype(np.float32)


def write_standin_graph(path) -> pathlib.Path:
    """A tiny GraphDef laid out like classify_image_graph_def.pb: JPEG decoder -> Cast -> ExpandDims ->
    ResizeBilinear(299) -> (x - 128) / 128 -> network -> pool_3 [N, 1, 1, D] -> batch-1 reshape -> softmax.
    Its "network" is a 1x1 conv with fixed weights and a ReLU."""
    graph = tf.Graph()
    with graph.as_default():
        contents = tf.compat.v1.placeholder(tf.string, [], name="DecodeJpeg/contents")
        pixels = tf.cast(tf.io.decode_jpeg(contents, channels=3, name="DecodeJpeg"), tf.float32, name="Cast")
        batch = tf.expand_dims(pixels, 0, name="ExpandDims")
        resized = tf.compat.v1.image.resize_bilinear(batch, [299, 299], name="ResizeBilinear")
        x = tf.multiply(tf.subtract(resized, 128.0, name="Sub"), 1 / 128.0, name="Mul")
        h = tf.nn.relu(tf.nn.conv2d(x, tf.constant(STANDIN_WEIGHTS[None, None]), 1, "VALID"))
        pool = tf.reduce_mean(h, axis=[1, 2], keepdims=True, name="pool_3")
        tf.nn.softmax(tf.reshape(pool, [1, STANDIN_FEATURES], name="pool_3/_reshape"), name="softmax")
    names = {node.name for node in graph.as_graph_def().node}
    assert {"DecodeJpeg/contents", "ExpandDims", "pool_3", "pool_3/_reshape"} <= names
    path = pathlib.Path(path)
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path
