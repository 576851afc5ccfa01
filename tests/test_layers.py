"""SPADE, SPADEResBlock, norms and resizing against independent NumPy definitions."""

import keras
import numpy as np
import pytest

from helpers.model_test_base import check_config_round_trip, check_precision
from spade_tf.layers import SPADE, NearestDownsample, SPADEResBlock, SpectralNorm, nearest_resize
from spade_tf.layers import conv_norm, parse_norm, parse_spade_norm


@pytest.mark.parametrize("src, dst", [((8, 6), (4, 3)), ((4, 4), (8, 8)), ((5, 7), (3, 4)), ((6, 6), (6, 6))])
def test_nearest_resize_uses_pytorchs_index_rule(src, dst):
    x = np.random.default_rng(0).normal(size=(1, *src, 2)).astype("float32")
    rows = [int(np.floor(i * src[0] / dst[0])) for i in range(dst[0])]
    cols = [int(np.floor(j * src[1] / dst[1])) for j in range(dst[1])]
    np.testing.assert_array_equal(np.array(nearest_resize(x, *dst)), x[:, rows][:, :, cols])


def test_downsample_keeps_top_left_pixels():
    x = np.arange(64, dtype="float32").reshape(1, 8, 8, 1)
    np.testing.assert_array_equal(np.array(NearestDownsample(4)(x))[0, :, :, 0], [[0, 4], [32, 36]])


def test_norm_strings():
    assert parse_spade_norm("spectralspadesyncbatch3x3") == (True, "syncbatch", 3)
    assert parse_spade_norm("spadeinstance5x5") == (False, "instance", 5)
    assert parse_norm("spectralinstance") == (True, "instance")
    assert parse_norm("syncbatch") == (False, "sync_batch")
    for bad in ("spectralspadesyncbatch3x5", "spadegroup3x3", "instance"):
        with pytest.raises(ValueError, match="expected \\[spectral\\]spade"):
            parse_spade_norm(bad)
    with pytest.raises(ValueError, match="expected \\[spectral\\]<instance"):
        parse_norm("layer")


def spade_numpy(layer, x, seg):
    """norm(x) * (1 + gamma) + beta, written out with the layer's weights (batch-norm inference)."""
    bn = layer.param_free_norm
    norm = (x - np.array(bn.moving_mean)) / np.sqrt(np.array(bn.moving_variance) + 1e-5)
    f = seg.shape[1] // x.shape[1]  # the layout is an integer multiple of the feature map here
    seg = seg[:, ::f, ::f]  # PyTorch nearest: top-left pixel of each block

    def conv(layer_, inp):
        return np.array(layer_(inp))

    actv = conv(layer.mlp_shared, seg)
    return norm * (1 + conv(layer.mlp_gamma, actv)) + conv(layer.mlp_beta, actv)


def test_spade_modulates_a_normalised_input():
    keras.utils.set_random_seed(0)
    layer = SPADE("batch", 3, hidden_channels=16)
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 5)).astype("float32")
    seg = np.random.default_rng(2).random((2, 16, 16, 3)).astype("float32")
    layer(x, seg)
    layer.param_free_norm.moving_mean.assign(np.full(5, 0.3, "float32"))
    layer.param_free_norm.moving_variance.assign(np.full(5, 2.0, "float32"))
    np.testing.assert_allclose(np.array(layer(x, seg)), spade_numpy(layer, x, seg), atol=1e-5)
    assert np.array(layer.mlp_gamma.kernel).shape == (3, 3, 16, 5)
    check_config_round_trip(layer, lambda m: m(x, seg))
    check_precision(layer, lambda m: m(x, seg))


def test_spade_training_normalises_with_batch_statistics_and_instance_norm_per_sample():
    x = np.random.default_rng(1).normal(3.0, 2.0, size=(4, 4, 4, 2)).astype("float32")
    seg = np.zeros((4, 4, 4, 3), "float32")  # conv biases are zero: gamma = beta = 0
    for kind, axes in (("syncbatch", (0, 1, 2)), ("instance", (1, 2))):
        y = np.array(SPADE(kind)(x, seg, training=True))
        np.testing.assert_allclose(y.mean(axis=axes), 0, atol=1e-5)
        np.testing.assert_allclose(y.std(axis=axes), 1, atol=1e-3)


def _values_and_gradients(fn, x, variables, upstream):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
        loss = tf.reduce_sum(tf.cast(y, "float32") * upstream + tf.square(tf.cast(y, "float32")))
    return [np.array(y, "float32")] + [np.array(g) for g in tape.gradient(loss, [x] + variables)]


@pytest.mark.parametrize("synchronized", [False, True])
def test_param_free_batch_norm_is_keras_batch_norm_with_a_gradient_from_its_output(synchronized):
    import tensorflow as tf

    from spade_tf.layers.normalization import ParamFreeBatchNorm

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, size=(3, 5, 6, 4)).astype("float32"))
    upstream = tf.constant(rng.normal(size=(3, 5, 6, 4)).astype("float32"))
    kwargs = dict(momentum=0.9, epsilon=1e-5, center=False, scale=False, synchronized=synchronized)
    ours, plain = ParamFreeBatchNorm(**kwargs), keras.layers.BatchNormalization(**kwargs)
    for training in (True, False):  # the moving statistics the training call left, then inference
        got, want = (_values_and_gradients(lambda t, n=n: n(t, training=training), x, [], upstream)
                     for n in (ours, plain))
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
        for name in ("moving_mean", "moving_variance"):
            np.testing.assert_array_equal(np.array(getattr(ours, name)), np.array(getattr(plain, name)))
    assert np.abs(want[1]).max() > 0.1  # a gradient worth comparing


def test_resblock_normalises_once_for_norm_0_and_norm_s_in_training():
    """One normalised copy serves both norms: the same outputs, gradients and moving statistics."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(1.0, 2.0, size=(2, 8, 8, 6)).astype("float32"))
    seg = tf.one_hot(rng.integers(0, 3, size=(2, 8, 8)), 3)
    upstream = tf.constant(rng.normal(size=(2, 8, 8, 4)).astype("float32"))
    shared, apart = SPADEResBlock(4), SPADEResBlock(4)
    shared(x, seg), apart(x, seg)
    apart.set_weights(shared.get_weights())
    apart._normalize_once = lambda x, training: None  # each norm normalises on its own, as the reference
    results = [_values_and_gradients(lambda t, b=b: b(t, seg, training=True), x, b.trainable_weights, upstream)
               for b in (shared, apart)]
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(shared.non_trainable_weights, apart.non_trainable_weights, strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6, atol=1e-7)
    # norm_s's moving mean went from 0 towards the batch mean (about 1), as norm_0's
    assert np.abs(np.array(shared.norm_s.param_free_norm.moving_mean)).min() > 0.05
    assert shared._normalize_once(x, training=True) is not None
    assert shared._normalize_once(x, training=False) is None  # inference: each norm its own statistics


def test_resblock_structure_follows_the_reference():
    x = np.zeros((1, 8, 8, 16), "float32")
    seg = np.zeros((1, 8, 8, 3), "float32")
    same = SPADEResBlock(16, "spectralspadesyncbatch3x3")
    same(x, seg)
    assert not same.learned_shortcut and not hasattr(same, "conv_s")
    assert isinstance(same.conv_0, SpectralNorm)
    down = SPADEResBlock(8, "spadebatch3x3")
    y = down(x, seg)
    assert y.shape == (1, 8, 8, 8) and down.learned_shortcut
    assert not isinstance(down.conv_0, SpectralNorm) and down.conv_s.use_bias is False
    assert down.conv_0.filters == 8  # min(fin, fout)
    # parameters, counted from the reference's definition
    spade = lambda c: 3 * 3 * 3 * 128 + 128 + 2 * (3 * 3 * 128 * c + c)  # noqa: E731
    expected = spade(16) + (9 * 16 * 8 + 8) + spade(8) + (9 * 8 * 8 + 8) + spade(16) + 16 * 8
    assert sum(int(np.prod(w.shape)) for w in down.trainable_weights) == expected


def test_resblock_round_trip():
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 6)).astype("float32")
    seg = np.random.default_rng(1).random((1, 8, 8, 3)).astype("float32")
    block = SPADEResBlock(4)
    block(x, seg)
    check_config_round_trip(block, lambda m: m(x, seg))
    check_precision(SPADEResBlock(4, "spectralspadeinstance3x3"), lambda m: m(x, seg))


@pytest.mark.parametrize(
    "norm, spectral, norm_class, bias",
    [("spectralinstance", True, "GroupNormalization", False), ("batch", False, "BatchNormalization", False),
     ("spectralsyncbatch", True, "BatchNormalization", False), ("none", False, None, True), (None, False, None, True)],
)
def test_conv_norm_is_the_references_nonspade_norm_layer(norm, spectral, norm_class, bias):
    layers = conv_norm(norm, 6, 3, ("c", "c_sn", "c_norm"), strides=2, dtype="mixed_bfloat16")
    conv = layers.conv.layer if spectral else layers.conv
    assert isinstance(layers.conv, SpectralNorm) == spectral and conv.name == "c" and conv.strides == (2, 2)
    assert conv.use_bias == bias  # a bias only when no norm follows, as the reference
    assert (type(layers.norm).__name__ if layers.norm else None) == norm_class
    assert all(layer.dtype_policy.name == "mixed_bfloat16" for layer in (layers.conv, conv, layers.norm) if layer)
    if spectral:
        assert layers.conv.name == "c_sn"
    if layers.norm is not None:
        assert layers.norm.name == "c_norm"
    y = layers(np.ones((1, 8, 8, 2), "float32"), training=True)
    assert y.shape == (1, 3, 3, 6) and y.dtype == "bfloat16"  # "valid": the callers pad as PyTorch
    transposed = conv_norm("instance", 3, 3, ("t", "t_sn", "t_norm"), strides=2, transpose=True)
    assert type(transposed.conv).__name__ == "Conv2DTranspose" and transposed.conv.use_bias is False


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_leaky_relu_keeps_keras_values_and_gradients(dtype):
    import tensorflow as tf

    from spade_tf.layers import LeakyReLU, leaky_relu

    x = tf.constant(np.concatenate([[0.0, -0.0, 1e-30, -1e-30, 3.0, -3.0],
                                    np.random.default_rng(0).normal(size=58)]).astype("float32"), dtype)
    upstream = tf.constant(np.random.default_rng(1).normal(size=64).astype("float32"), dtype)
    grads = []
    for fn in (leaky_relu, lambda t: keras.ops.leaky_relu(t, 0.2)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        grads.append(tape.gradient(y, x, output_gradients=upstream))
        np.testing.assert_array_equal(np.array(y, "float32"), np.array(keras.ops.leaky_relu(x, 0.2), "float32"))
    np.testing.assert_array_equal(np.array(grads[0], "float32"), np.array(grads[1], "float32"))
    layer = LeakyReLU(0.2)
    check_config_round_trip(layer, lambda lay: lay(np.linspace(-1, 1, 8, dtype="float32")))
    with pytest.raises(ValueError, match="negative_slope must be in"):
        LeakyReLU(1.5)
