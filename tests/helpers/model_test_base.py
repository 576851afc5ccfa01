"""One shared set of checks for every layer and model (in the spirit of keras-hub's TestCase).

`run_model_test`: config round trip (get_config -> from_config gives the same outputs once weights
are copied), `.keras` save and load with identical outputs, one training step that changes the
trainable weights, and mixed precision (`check_precision`, as keras-hub's `run_precision_test`).
"""

import keras
import numpy as np
import tensorflow as tf


def _as_list(x):
    return [np.asarray(t) for t in tf.nest.flatten(x)]


def assert_same_outputs(a, b, atol=1e-6):
    for x, y in zip(_as_list(a), _as_list(b), strict=True):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


def check_config_round_trip(obj, call):
    """`call(obj)` gives the same outputs for `obj` and a copy rebuilt from its config with its weights."""
    clone = obj.__class__.from_config(obj.get_config())
    call(clone)  # build
    clone.set_weights(obj.get_weights())
    assert_same_outputs(call(obj), call(clone))
    assert keras.saving.serialize_keras_object(clone)["config"] == keras.saving.serialize_keras_object(obj)["config"]


def check_saving(model, inputs, tmp_path):
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    assert_same_outputs(model(inputs, training=False), loaded(inputs, training=False))
    return loaded


def check_train_step(model, inputs):
    """One SGD step on the mean of all outputs changes every trainable weight's value somewhere."""
    before = [np.array(w) for w in model.trainable_weights]
    optimizer = keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        loss = tf.add_n([tf.reduce_mean(o) for o in tf.nest.flatten(model(inputs, training=True))])
    grads = tape.gradient(loss, model.trainable_weights)
    missing = [w.path for w, g in zip(model.trainable_weights, grads) if g is None]
    assert not missing, f"no gradient for {missing}"
    optimizer.apply_gradients(zip(grads, model.trainable_weights))
    unchanged = [w.path for w, b in zip(model.trainable_weights, before) if np.array_equal(np.array(w), b)]
    assert not unchanged, f"weights not updated: {unchanged}"
    assert np.isfinite(float(loss))


def _float32_outputs(obj):
    """The layers a network deliberately keeps in float32: the output layers of it and its sub-networks."""
    keep = set()
    for layer in obj._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, keras.Model) and getattr(layer, "outputs", None):
            keep.update(id(t._keras_history[0]) for t in tf.nest.flatten(layer.outputs))
    return keep - {id(m) for m in obj._flatten_layers(include_self=True) if isinstance(m, keras.Model)}


def check_precision(obj, call, policies=("mixed_bfloat16", "mixed_float16")):
    """Rebuilt from its config with each mixed `dtype`: every layer computes in the policy's dtype
    (but the float32 outputs) and every variable is float32; bfloat16 outputs are finite (float16's
    range is too small for Keras's default gain-1 initialisation through a deep generator)."""
    for name in policies:
        policy = keras.dtype_policies.get(name)
        clone = obj.__class__.from_config({**obj.get_config(), "dtype": name})
        outputs = tf.nest.flatten(call(clone))
        assert clone.dtype_policy.name == name
        keep = _float32_outputs(clone)
        for layer in clone._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, keras.layers.InputLayer):
                continue
            want = "float32" if id(layer) in keep else policy.compute_dtype
            assert layer.compute_dtype == want, f"{name}: {layer.path} computes in {layer.compute_dtype}, not {want}"
            assert layer.variable_dtype == "float32", f"{name}: {layer.path} keeps {layer.variable_dtype} variables"
        assert all(w.dtype == "float32" for w in clone.weights)
        for out in outputs if policy.compute_dtype == "bfloat16" else ():
            assert np.all(np.isfinite(np.asarray(tf.cast(out, tf.float32)))), f"{name}: non-finite outputs"
        assert obj.__class__.from_config(clone.get_config()).dtype_policy.name == name  # the config keeps it


def run_model_test(model, inputs, tmp_path):
    model(inputs)
    check_config_round_trip(model, lambda m: m(inputs, training=False))
    check_saving(model, inputs, tmp_path)
    check_train_step(model, inputs)
    check_precision(model, lambda m: m(inputs, training=False))
