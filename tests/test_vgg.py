"""Tests for the VGG19 perceptual loss and its weight loaders (spade_tf/losses/vgg.py)."""

import logging
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.pth import Storage, Tensor, write_checkpoint  # torch.save's format, without torch

from spade_tf.config import Config, replace
from spade_tf.io.torch_pth import CheckpointError
from spade_tf.losses import VGG19Features, VGGLoss, build_vgg, load_torchvision_vgg19

# torchvision's VGG19 (configuration "E") `features`: conv widths, "M" = 2x2 max-pool.
TORCHVISION_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                     512, 512, 512, 512, "M"]
UP_TO_RELU5_1 = TORCHVISION_VGG19[:17]  # features[:30]: ... pool4, conv5_1 (+ its ReLU)


def _conv_shapes(layout):
    """(torchvision features index, [out, in, 3, 3]) of every conv: each conv is followed by a ReLU."""
    shapes, index, channels = [], 0, 3
    for item in layout:
        if item == "M":
            index += 1
        else:
            shapes.append((index, (item, channels, 3, 3)))
            index, channels = index + 2, item
    return shapes


def _parameters(layout):
    return sum(out * inp * 9 + out for _, (out, inp, _, _) in _conv_shapes(layout))


@pytest.fixture(scope="module")
def vgg():
    return VGG19Features()


@pytest.fixture(scope="module")
def torch_state(tmp_path_factory):
    """A random VGG19 state dict as torchvision saves it (with classifier and deeper keys), and its path."""
    rng = np.random.default_rng(0)
    arrays = {}
    for index, shape in _conv_shapes(TORCHVISION_VGG19):
        fan_in = shape[1] * 9
        arrays[f"features.{index}.weight"] = rng.normal(scale=np.sqrt(2 / fan_in), size=shape).astype(np.float32)
        arrays[f"features.{index}.bias"] = rng.normal(scale=0.1, size=shape[:1]).astype(np.float32)
    arrays["classifier.0.weight"] = rng.normal(size=(8, 4)).astype(np.float32)  # ignored (really 4096 x 25088)
    arrays["classifier.0.bias"] = rng.normal(size=(8,)).astype(np.float32)
    path = tmp_path_factory.mktemp("vgg") / "vgg19-dcbb9e9d.pth"
    _write_torch(path, arrays)
    return arrays, path


def _write_torch(path, arrays):
    state = {}
    for i, (key, value) in enumerate(arrays.items()):
        strides = [int(np.prod(value.shape[d + 1:])) for d in range(value.ndim)]
        state[key] = Tensor(Storage("FloatStorage", str(i), value.ravel()), 0, value.shape, tuple(strides))
    return write_checkpoint(path, state)


def test_structure_and_parameter_count_match_torchvision(vgg):
    assert _parameters(TORCHVISION_VGG19) == 20_024_384  # torchvision's vgg19().features
    assert vgg.count_params() == _parameters(UP_TO_RELU5_1) == 12_944_960
    layers = [layer for layer in vgg.layers if not isinstance(layer, keras.layers.InputLayer)]
    described = []
    for layer in layers:
        if isinstance(layer, keras.layers.MaxPooling2D):
            assert layer.pool_size == (2, 2) and layer.strides == (2, 2) and layer.padding == "valid"
            described.append("M")
        else:
            assert isinstance(layer, keras.layers.Conv2D)
            assert layer.kernel_size == (3, 3) and layer.strides == (1, 1) and layer.padding == "same"
            assert layer.use_bias and layer.activation is keras.activations.relu
            described.append(layer.filters)
    assert described == UP_TO_RELU5_1
    assert not vgg.trainable and vgg.trainable_weights == []


def test_output_shapes(vgg):
    outputs = vgg(np.zeros((2, 64, 64, 3), np.float32))
    assert [tuple(o.shape) for o in outputs] == [
        (2, 64, 64, 64), (2, 32, 32, 128), (2, 16, 16, 256), (2, 8, 8, 512), (2, 4, 4, 512)]


def _conv_relu_at(x, weight, bias, i, j):
    """relu(conv3x3(x)) at pixel (i, j), zero padding 1, from torch's [out, in, kh, kw] weights."""
    total = bias.astype(np.float64).copy()
    for di in range(3):
        for dj in range(3):
            y, xx = i + di - 1, j + dj - 1
            if 0 <= y < x.shape[0] and 0 <= xx < x.shape[1]:
                total += weight[:, :, di, dj].astype(np.float64) @ x[y, xx].astype(np.float64)
    return np.maximum(total, 0)


def test_load_torchvision_vgg19(torch_state):
    arrays, path = torch_state
    model = VGG19Features()
    load_torchvision_vgg19(model, path)
    image = np.random.default_rng(1).uniform(-1, 1, size=(1, 32, 32, 3)).astype(np.float32)
    relu1_1 = np.asarray(model(image)[0])
    for i, j in [(7, 11), (0, 5), (31, 31)]:  # inside, on an edge, in a corner
        expected = _conv_relu_at(image[0], arrays["features.0.weight"], arrays["features.0.bias"], i, j)
        np.testing.assert_allclose(relu1_1[0, i, j], expected, rtol=1e-4, atol=1e-5)
    # the deepest conv: relu5_1 from pool4's output with features.28's weights
    pool4 = keras.Model(model.input, model.get_layer("pool4").output)(image)[0].numpy()
    relu5_1 = np.asarray(model(image)[4])
    expected = _conv_relu_at(pool4, arrays["features.28.weight"], arrays["features.28.bias"], 1, 0)
    np.testing.assert_allclose(relu5_1[0, 1, 0], expected, rtol=1e-4, atol=1e-4)
    assert np.any(expected > 0)


def test_load_torchvision_vgg19_errors(tmp_path, torch_state):
    arrays, _ = torch_state
    model = VGG19Features()
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth does not exist.*vgg19-dcbb9e9d\.pth"):
        load_torchvision_vgg19(model, tmp_path / "nowhere.pth")
    broken = {k: v for k, v in arrays.items() if not k.startswith("features.28.")}
    broken["features.0.weight"] = arrays["features.0.weight"][:, :1]
    path = _write_torch(tmp_path / "broken.pth", broken)
    message = (r"broken\.pth is not torchvision's VGG19 state dict.*features\.0\.weight has shape "
               r"\(64, 1, 3, 3\), expected \(64, 3, 3, 3\); missing features\.28\.weight; missing features\.28\.bias")
    with pytest.raises(ValueError, match=message):
        load_torchvision_vgg19(model, path)
    text = tmp_path / "vgg19.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"vgg19\.pth is not a PyTorch checkpoint"):
        load_torchvision_vgg19(model, text)


def _config(**train):
    return replace(Config(), {"train": train})


def test_build_vgg(torch_state, caplog):
    arrays, path = torch_state
    assert build_vgg(_config(no_vgg_loss=True)) is None
    assert build_vgg(_config(no_vgg_loss=True, vgg_weights="")) is None
    with pytest.raises(ValueError, match=r"train\.vgg_weights.*train\.no_vgg_loss=true"):
        build_vgg(_config(vgg_weights=""))
    with caplog.at_level(logging.WARNING, logger="spade_tf.losses.vgg"):
        random = build_vgg(_config(vgg_weights="random"))
    assert isinstance(random, VGG19Features) and "tests and benchmarks only" in caplog.text
    loaded = build_vgg(_config(vgg_weights=str(path)))
    np.testing.assert_array_equal(loaded.get_layer("conv3_2").kernel.numpy(),
                                  arrays["features.12.weight"].transpose(2, 3, 1, 0))
    with pytest.raises(FileNotFoundError, match=r"missing\.pth does not exist"):
        build_vgg(_config(vgg_weights=str(path.parent / "missing.pth")))


def test_build_vgg_keras_imagenet(tmp_path, monkeypatch):
    """Keras's weights, never downloaded: an error without the cached file; with it, caffe input folded in."""
    if pathlib.Path("/tmp/.keras/models/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5").exists():
        pytest.skip("a real Keras VGG19 file is cached in /tmp/.keras on this machine")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    weights = tmp_path / "models" / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with pytest.raises(FileNotFoundError, match=rf"keras-imagenet.*nothing is downloaded.*{weights}"):
        build_vgg(_config(vgg_weights="keras-imagenet"))

    import h5py
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    keras_vgg = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
    for layer in keras_vgg.layers:  # biases are zero at initialisation: make them matter
        if layer.weights:
            layer.bias.assign(np.random.default_rng(2).normal(size=layer.bias.shape))
    weights.parent.mkdir()
    with h5py.File(weights, "w") as f:
        save_weights_to_hdf5_group(f, keras_vgg)
    ours = build_vgg(_config(vgg_weights="keras-imagenet"))
    image = np.random.default_rng(3).uniform(-1, 1, size=(1, 16, 16, 3)).astype(np.float32)
    caffe = keras.applications.vgg19.preprocess_input((image + 1) * 127.5)  # RGB [0, 255] -> caffe BGR
    first = keras.Model(keras_vgg.input, keras_vgg.get_layer("block1_conv1").output)
    np.testing.assert_allclose(ours(image)[0][:, 1:-1, 1:-1], first(caffe)[:, 1:-1, 1:-1], rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(ours.get_layer("conv5_1").kernel.numpy(),
                                  keras_vgg.get_layer("block5_conv1").kernel.numpy())


# ---- the loss ---------------------------------------------------------------------------------

def test_vgg_loss_matches_numpy(vgg):
    rng = np.random.default_rng(4)
    fake = rng.uniform(-1, 1, size=(2, 32, 32, 3)).astype(np.float32)
    real = rng.uniform(-1, 1, size=(2, 32, 32, 3)).astype(np.float32)
    loss = VGGLoss(vgg, 10.0)(fake, real)
    assert loss.shape == (2,) and loss.dtype == tf.float32
    weights = [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1]
    expected = np.zeros(2)
    for w, f, r in zip(weights, vgg(fake), vgg(real)):  # separate passes, raw [-1, 1] input
        expected += w * np.abs(np.asarray(f, np.float64) - np.asarray(r)).reshape(2, -1).mean(axis=1)
    np.testing.assert_allclose(loss, 10.0 * expected, rtol=1e-4)
    assert np.all(expected > 0)
    np.testing.assert_array_equal(VGGLoss(vgg, 10.0)(fake, fake), np.zeros(2))
    np.testing.assert_allclose(VGGLoss(vgg, 10.0)(fake[1:], real[1:]), loss[1:], rtol=1e-5)  # per example


def test_vgg_loss_gradient_reaches_fake_only(vgg):
    rng = np.random.default_rng(5)
    fake = tf.constant(rng.uniform(-1, 1, size=(1, 32, 32, 3)).astype(np.float32))
    real = tf.constant(rng.uniform(-1, 1, size=(1, 32, 32, 3)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([fake, real])
        loss = tf.reduce_sum(VGGLoss(vgg, 10.0)(fake, real))
    grad_fake, grad_real = tape.gradient(loss, [fake, real])
    assert grad_fake is not None and np.any(grad_fake)
    assert grad_real is None or not np.any(grad_real)
    assert vgg.trainable_weights == []
    with tf.GradientTape() as tape:  # train.low_memory: the fake's pass recomputed, the same gradient
        tape.watch(fake)
        remat_loss = tf.reduce_sum(VGGLoss(vgg, 10.0, rematerialize=True)(fake, real))
    np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(remat_loss, fake), grad_fake, rtol=1e-5, atol=1e-9)


def test_vgg_loss_bfloat16_input_and_shape_errors(vgg):
    rng = np.random.default_rng(6)
    fake = rng.uniform(-1, 1, size=(1, 32, 32, 3)).astype(np.float32)
    real = rng.uniform(-1, 1, size=(1, 32, 32, 3)).astype(np.float32)
    loss16 = VGGLoss(vgg, 10.0)(tf.cast(fake, tf.bfloat16), real)
    assert loss16.dtype == tf.float32
    np.testing.assert_allclose(loss16, VGGLoss(vgg, 10.0)(fake, real), rtol=5e-2)
    message = r"RGB images \[batch, H, W, 3\] of one shape; got \(1, 32, 32, 3\) and \(1, 16, 16, 3\)"
    with pytest.raises(ValueError, match=message):
        VGGLoss(vgg, 10.0)(fake, real[:, :16, :16])
    with pytest.raises(ValueError, match=r"got \(1, 32, 32, 1\)"):
        VGGLoss(vgg, 10.0)(fake[..., :1], real[..., :1])
