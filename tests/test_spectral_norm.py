import keras
import numpy as np
import tensorflow as tf

from spade_tf.layers import SpectralNorm


def make(out=4, cin=3, k=3, seed=0):
    keras.utils.set_random_seed(seed)
    layer = SpectralNorm(keras.layers.Conv2D(out, k, padding="same"))
    x = np.random.default_rng(seed).normal(size=(2, 5, 5, cin)).astype("float32")
    layer(x)
    return layer, x


def torch_matrix(kernel):  # [kh, kw, in, out] -> torch [out, in*kh*kw]
    return kernel.transpose(3, 2, 0, 1).reshape(kernel.shape[-1], -1)


def test_training_call_is_one_torch_power_iteration():
    layer, x = make()
    w = torch_matrix(np.array(layer.layer.kernel))
    u0 = np.array(layer.u)
    kernel_before = np.array(layer.layer.kernel)
    layer(x, training=True)
    v = w.T @ u0
    v /= np.linalg.norm(v)
    u = w @ v
    u /= np.linalg.norm(u)
    np.testing.assert_allclose(np.array(layer.v), v, atol=1e-6)
    np.testing.assert_allclose(np.array(layer.u), u, atol=1e-6)
    # the trainable variable is the raw weight (torch's weight_orig): never overwritten
    np.testing.assert_array_equal(np.array(layer.layer.kernel), kernel_before)


def test_repeated_training_calls_converge_to_the_largest_singular_value():
    layer, x = make()
    for _ in range(50):
        layer(x, training=True)
    w = torch_matrix(np.array(layer.layer.kernel))
    sigma = float(np.array(layer.u) @ w @ np.array(layer.v))
    np.testing.assert_allclose(sigma, np.linalg.svd(w, compute_uv=False)[0], rtol=1e-4)


def test_inference_uses_the_stored_vectors_and_changes_nothing():
    layer, x = make()
    state = [np.array(v) for v in layer.weights]
    y1 = np.array(layer(x, training=False))
    y2 = np.array(layer(x))
    for before, after in zip(state, layer.weights):
        np.testing.assert_array_equal(before, np.array(after))
    np.testing.assert_array_equal(y1, y2)
    w = np.array(layer.layer.kernel)
    sigma = float(np.array(layer.u) @ torch_matrix(w) @ np.array(layer.v))
    plain = keras.layers.Conv2D(4, 3, padding="same")
    plain.build(x.shape)
    plain.set_weights([w / sigma, np.array(layer.layer.bias)])
    np.testing.assert_allclose(y1, np.array(plain(x)), atol=1e-5)


def test_gradient_flows_through_sigma():
    layer, x = make(out=2, cin=2, k=1)
    kernel = layer.layer.kernel
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=False) ** 2)
    grad = tape.gradient(loss, kernel).numpy()
    # finite differences of the same inference-mode function (u, v fixed)
    numeric = np.zeros_like(grad)
    base = np.array(kernel)
    eps = 1e-3
    for idx in np.ndindex(base.shape):
        for sign in (1, -1):
            k = base.copy()
            k[idx] += sign * eps
            kernel.assign(k)
            numeric[idx] += sign * float(tf.reduce_sum(layer(x) ** 2)) / (2 * eps)
    kernel.assign(base)
    np.testing.assert_allclose(grad, numeric, rtol=2e-2, atol=2e-2)
    # dividing by a constant sigma would give a different gradient
    sigma = float(np.array(layer.u) @ torch_matrix(base) @ np.array(layer.v))
    with tf.GradientTape() as tape:
        y = tf.nn.conv2d(x, kernel / tf.stop_gradient(sigma), 1, "SAME") + layer.layer.bias
        loss = tf.reduce_sum(y**2)
    assert not np.allclose(tape.gradient(loss, kernel).numpy(), grad, atol=1e-3)


def test_reference_sigma_reproduced(nvlabs_fixture):
    from spade_tf.io.nvlabs import config_from_opt, import_checkpoint

    cfg = config_from_opt(nvlabs_fixture / "options.txt")
    g, d, e = import_checkpoint(nvlabs_fixture, cfg)
    sigmas = np.load(nvlabs_fixture / "sn_sigma.npz")
    for key, block, conv in (("G:head_0.conv_0", "head_0", "conv_0"), ("G:up_2.conv_s", "up_2", "conv_s")):
        layer = getattr(g.get_layer(block), conv)
        ours = float(np.array(layer.u) @ np.array(layer.weight_matrix()) @ np.array(layer.v))
        np.testing.assert_allclose(ours, sigmas[key], rtol=1e-5)


def test_config_round_trip_keeps_the_wrapped_layer():
    layer, x = make()
    clone = SpectralNorm.from_config(layer.get_config())
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.array(clone(x)), np.array(layer(x)), atol=1e-6)
    assert clone.layer.filters == 4 and clone.eps == layer.eps


def test_training_divides_the_output_of_a_wide_convolution_with_the_same_result_and_gradients(monkeypatch):
    layer, x = make(out=64, cin=32, k=3)  # kernel 18,432 values, output 3,200: the output is divided
    assert layer.divides_outputs(x, training=True)
    assert not layer.divides_outputs(x, training=False)
    narrow, narrow_x = make(out=2, cin=3, k=1)
    assert not narrow.divides_outputs(narrow_x, training=True)  # a kernel smaller than its output
    upstream = tf.constant(np.random.default_rng(1).normal(size=(2, 5, 5, 64)).astype("float32"))
    state = [v.numpy() for v in (layer.u, layer.v)]
    results = []
    for divides in (True, False):
        monkeypatch.setattr(SpectralNorm, "divides_outputs", lambda self, inputs, training=False, d=divides: d)
        for v, value in zip((layer.u, layer.v), state):
            v.assign(value)
        with tf.GradientTape() as tape:
            y = layer(x, training=True)
        results.append((y.numpy(), [g.numpy() for g in tape.gradient(y, layer.trainable_variables, upstream)]))
    (y, grads), (y_ref, grads_ref) = results
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-5 * np.abs(y_ref).max())
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert np.linalg.norm(g - g_ref) <= 1e-5 * np.linalg.norm(g_ref)
