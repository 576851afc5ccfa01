import numpy as np
import pytest
import tensorflow as tf

from spade_tf.semantics import instance_edges, semantic_input, semantic_nc


def edges_by_loops(ids):
    """Independent definition: a pixel is an edge when any 4-neighbour has another id."""
    h, w = ids.shape
    out = np.zeros((h, w), np.float32)
    for y in range(h):
        for x in range(w):
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and ids[yy, xx] != ids[y, x]:
                    out[y, x] = 1
    return out


def test_edges_match_the_definition():
    ids = np.random.default_rng(0).integers(0, 3, (9, 11)).astype(np.int32)
    np.testing.assert_array_equal(instance_edges(ids).numpy(), edges_by_loops(ids))
    batch = np.stack([ids, ids[::-1]])
    np.testing.assert_array_equal(instance_edges(batch).numpy()[1], edges_by_loops(ids[::-1]))
    assert instance_edges(np.zeros((4, 4), np.int32)).numpy().sum() == 0


def test_reference_semantics_reproduced(nvlabs_fixture):
    inputs = np.load(nvlabs_fixture / "inputs.npz")
    ours = semantic_input(inputs["label"], inputs["instance"], label_nc=5, contain_dontcare_label=False,
                          use_instance=True)
    np.testing.assert_array_equal(ours.numpy(), inputs["semantics"].transpose(0, 2, 3, 1))


def test_dontcare_label_255_becomes_the_unknown_channel():
    labels = np.array([[[0, 255], [2, 3]]], np.uint8)
    s = semantic_input(labels, label_nc=3, contain_dontcare_label=True, use_instance=False).numpy()
    assert s.shape == (1, 2, 2, semantic_nc(3, True, False)) == (1, 2, 2, 4)
    assert s[0, 0, 1].argmax() == 3 and s[0, 1, 1].argmax() == 3 and s[0, 1, 0].argmax() == 2
    np.testing.assert_array_equal(s.sum(-1), 1)


@pytest.mark.parametrize(
    "labels, kwargs, message",
    [
        ([[0, 7]], dict(label_nc=5, contain_dontcare_label=False), r"values \[7\] outside.*0..4"),
        ([[0, 255]], dict(label_nc=5, contain_dontcare_label=False), r"values \[255\].*no don't-care label"),
        ([[0, 6]], dict(label_nc=5, contain_dontcare_label=True), r"values \[7\]|values \[6\]"),
    ],
)
def test_labels_outside_the_label_set_are_named(labels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        semantic_input(np.array(labels), use_instance=False, **kwargs)


def test_graph_mode_asserts_inside_the_graph():
    f = tf.function(lambda x: semantic_input(x, label_nc=3, contain_dontcare_label=False, use_instance=False))
    assert f(tf.constant([[[0, 2]]], tf.uint8)).shape == (1, 1, 2, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside the label set; expected class indices 0..2"):
        f(tf.constant([[[0, 3]]], tf.uint8))


def test_structure_errors():
    with pytest.raises(ValueError, match=r"\[H, W\] or \[batch, H, W\]"):
        semantic_input(np.zeros((1, 2, 2, 3)), label_nc=3, contain_dontcare_label=False, use_instance=False)
    with pytest.raises(ValueError, match="uses instance maps"):
        semantic_input(np.zeros((2, 2)), label_nc=3, contain_dontcare_label=False, use_instance=True)
    with pytest.raises(ValueError, match="does not use instance maps"):
        semantic_input(np.zeros((2, 2)), np.zeros((2, 2)), label_nc=3, contain_dontcare_label=False,
                       use_instance=False)
    with pytest.raises(ValueError, match="differs from label map shape"):
        semantic_input(np.zeros((2, 2)), np.zeros((3, 2)), label_nc=3, contain_dontcare_label=False,
                       use_instance=True)
