"""From a label map (and instance map) to the networks' semantic input.

The reference (`Pix2PixModel.preprocess_input`) feeds its networks a one-hot encoding of the
label map, with one extra "unknown" channel when the dataset has a don't-care label, and one
instance-boundary channel last when instance maps are used. This module is the only place that
encoding is computed: the data pipeline, the trainer and the exported SavedModel all call it.
Channels last: [batch, H, W, semantic_nc] float32 (a single [H, W] map gives [H, W, C]).
"""

import numpy as np
import tensorflow as tf
from spade_tf_client.contract import UNKNOWN_LABEL, allowed_labels


def semantic_nc(label_nc: int, contain_dontcare_label: bool, use_instance: bool) -> int:
    return label_nc + int(contain_dontcare_label) + int(use_instance)


def instance_edges(instance_map):
    """1.0 where a pixel's id differs from any 4-neighbour's, else 0.0 (borders are not edges).

    Works on [H, W] or [batch, H, W] maps of any integer type.
    """
    ids = tf.convert_to_tensor(instance_map)
    rank = ids.shape.rank
    if rank not in (2, 3):
        raise ValueError(f"instance map must be [H, W] or [batch, H, W], got shape {ids.shape}")
    batched = ids if rank == 3 else ids[None]
    dh = tf.not_equal(batched[:, 1:, :], batched[:, :-1, :])  # differs from the pixel above
    dw = tf.not_equal(batched[:, :, 1:], batched[:, :, :-1])  # differs from the pixel to the left
    edge = (
        tf.pad(dh, [[0, 0], [1, 0], [0, 0]])
        | tf.pad(dh, [[0, 0], [0, 1], [0, 0]])
        | tf.pad(dw, [[0, 0], [0, 0], [1, 0]])
        | tf.pad(dw, [[0, 0], [0, 0], [0, 1]])
    )
    edge = tf.cast(edge, tf.float32)
    return edge if rank == 3 else edge[0]


def class_indices(label_map, label_nc: int, contain_dontcare_label: bool):
    """Label map -> int32 class indices in [0, nc), with 255 mapped to the unknown index.

    Values outside the label set raise ValueError (eagerly) or InvalidArgumentError (in a graph),
    naming the value range found and the one expected.
    """
    labels = tf.cast(tf.convert_to_tensor(label_map), tf.int32)
    valid = allowed_labels(label_nc, contain_dontcare_label)  # the export contract's label-value rule
    nc = label_nc + int(contain_dontcare_label)
    if contain_dontcare_label:
        labels = tf.where(labels == UNKNOWN_LABEL, label_nc, labels)
    if tf.executing_eagerly():
        values = labels.numpy()
        if values.size and (values.min() < 0 or values.max() >= nc):
            bad = np.unique(values[(values < 0) | (values >= nc)])[:10].tolist()
            raise ValueError(f"label map has values {bad} outside the label set; expected {valid}")
        return labels
    checks = [
        tf.debugging.assert_non_negative(labels, message=f"label map has negative values; expected {valid}"),
        tf.debugging.assert_less(labels, nc, message=f"label map has values outside the label set; expected {valid}"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(labels)


def semantic_input(label_map, instance_map=None, *, label_nc: int, contain_dontcare_label: bool, use_instance: bool):
    """[batch, H, W] label map (+ instance map) -> [batch, H, W, semantic_nc] float32.

    `label_map` holds class ids (255 = unknown when `contain_dontcare_label`); `instance_map`
    holds instance ids and is required exactly when `use_instance`.
    """
    labels = tf.convert_to_tensor(label_map)
    if labels.shape.rank not in (2, 3):
        raise ValueError(f"label map must be [H, W] or [batch, H, W] class ids, got shape {labels.shape}")
    if use_instance and instance_map is None:
        raise ValueError("this model uses instance maps: pass instance_map with the same shape as label_map")
    if not use_instance and instance_map is not None:
        raise ValueError("this model does not use instance maps (data.no_instance is true): drop instance_map")
    nc = label_nc + int(contain_dontcare_label)
    onehot = tf.one_hot(class_indices(labels, label_nc, contain_dontcare_label), nc, dtype=tf.float32)
    if not use_instance:
        return onehot
    instances = tf.convert_to_tensor(instance_map)
    if instances.shape.rank is not None and labels.shape.rank is not None:
        if not instances.shape.is_compatible_with(labels.shape):
            raise ValueError(f"instance map shape {instances.shape} differs from label map shape {labels.shape}")
    return tf.concat([onehot, instance_edges(instances)[..., None]], axis=-1)
