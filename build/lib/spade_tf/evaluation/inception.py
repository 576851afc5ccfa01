"""Image feature extractors for FID and KID, loaded from local files only (nothing is downloaded).

`Inception2015` is the comparable one: the pool_3 features [N, 2048] of the 2015 Inception graph
(`classify_image_graph_def.pb` in
http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz), the network of the
original TensorFlow FID code (bioinf-jku/TTUR) and of the FIDs papers report. As that code does,
images with values 0..255 and any size are fed to the graph's `ExpandDims:0` tensor and the graph
itself resizes them to 299x299 (its `ResizeBilinear`, TF1 corner alignment), scales them to
[-1, 1] and runs the network; `pool_3:0` is read. TensorFlow loads the GraphDef natively: it is
imported into a function with `ExpandDims:0` mapped to a [batch, H, W, 3] input, so whole batches
of one size run at once (TTUR patches the graph's batch-1 shapes for the same purpose).

`KerasInceptionV3` (`keras.applications.InceptionV3`, include_top=False, average pooling, 2048
features) is an alternative when the graph file is not at hand. Its weights are another training
of InceptionV3 and its resize differs, so its FIDs are NOT comparable with published ones; use it
only to compare models with each other.
"""

import pathlib

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError

GRAPH_FILE = "classify_image_graph_def.pb"
GRAPH_ARCHIVE = "http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz"
INPUT_TENSOR = "ExpandDims:0"
OUTPUT_TENSOR = "pool_3:0"
KERAS_WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_SIZE = 299
EXTRACTORS = ("inception-2015", "keras-inceptionv3")


def _local_file(path, option: str, what: str) -> pathlib.Path:
    if not path:
        raise FileNotFoundError(f"no {what} given: pass its local path with {option} (nothing is downloaded)")
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found (given with {option}; nothing is downloaded)")
    return path


class Inception2015:
    """pool_3 features of the 2015 Inception GraphDef: uint8 (or 0..255 float) [N, H, W, 3] -> float64 [N, 2048].

    Args:
        graph_path: local `classify_image_graph_def.pb`.
        option: how the caller lets users give the path, named in errors.
    """

    name = "inception-2015"

    def __init__(self, graph_path, option="eval.inception_graph"):
        what = f"Inception graph ({GRAPH_FILE} from {GRAPH_ARCHIVE})"
        path = _local_file(graph_path, option, what)
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(path.read_bytes())
        except DecodeError as e:
            raise ValueError(f"{path} is not a TensorFlow GraphDef: {e}; expected {what}") from None
        nodes = {node.name: node for node in graph_def.node}
        for tensor in (INPUT_TENSOR, OUTPUT_TENSOR):
            if tensor.split(":")[0] not in nodes:
                raise ValueError(f"{path} has no tensor {tensor}; expected {what}")
        self.input_dtype = tf.as_dtype(nodes[INPUT_TENSOR.split(":")[0]].attr["T"].type)

        def features(images):
            (pool_3,) = tf.graph_util.import_graph_def(
                graph_def, input_map={INPUT_TENSOR: images}, return_elements=[OUTPUT_TENSOR], name="inception"
            )
            return pool_3

        wrapped = tf.compat.v1.wrap_function(features, [tf.TensorSpec([None, None, None, 3], self.input_dtype)])
        # Only the ops between the input and pool_3 run (not the JPEG decoder or the batch-1 classifier head).
        self._features = wrapped.prune(feeds=wrapped.inputs[0], fetches=wrapped.outputs[0])

    def __call__(self, images) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be [N, H, W, 3] RGB with values 0..255, got shape {images.shape}")
        if self.input_dtype == tf.uint8:
            images = np.clip(np.round(images), 0, 255)
        pool_3 = self._features(tf.constant(images, self.input_dtype))
        return pool_3.numpy().reshape(len(images), -1).astype(np.float64)


class KerasInceptionV3:
    """Keras InceptionV3 average-pooled features (not comparable with published FIDs): [N, H, W, 3] -> [N, 2048].

    Images (0..255) are resized bilinearly to 299x299 and scaled to [-1, 1] (`inception_v3.preprocess_input`).

    Args:
        weights_path: local Keras weights of InceptionV3 without its top (`KERAS_WEIGHTS_FILE`).
        option: how the caller lets users give the path, named in errors.
    """

    name = "keras-inceptionv3"

    def __init__(self, weights_path, option="eval.keras_inception_weights"):
        import keras

        path = _local_file(weights_path, option, f"Keras InceptionV3 weights file (e.g. {KERAS_WEIGHTS_FILE})")
        self.model = keras.applications.InceptionV3(
            include_top=False, weights=str(path), pooling="avg", input_shape=(KERAS_SIZE, KERAS_SIZE, 3)
        )
        preprocess = keras.applications.inception_v3.preprocess_input

        def features(images):
            x = tf.image.resize(tf.cast(images, tf.float32), (KERAS_SIZE, KERAS_SIZE), method="bilinear")
            return self.model(preprocess(x), training=False)

        self._features = tf.function(features, jit_compile=False, reduce_retracing=True)

    def __call__(self, images) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be [N, H, W, 3] RGB with values 0..255, got shape {images.shape}")
        return self._features(tf.constant(images, tf.float32)).numpy().astype(np.float64)


def build_extractor(name: str, inception_graph="", keras_inception_weights=""):
    """An extractor by name (the `eval` config's fields): "inception-2015" (needs `inception_graph`) or
    "keras-inceptionv3" (needs `keras_inception_weights`)."""
    if name == "inception-2015":
        return Inception2015(inception_graph)
    if name == "keras-inceptionv3":
        return KerasInceptionV3(keras_inception_weights)
    raise ValueError(f"unknown feature extractor {name!r}; expected one of {', '.join(EXTRACTORS)}")
