"""Region-wise SPADE (`spade_impl=regions`): the dense path's outputs and gradients, for less work.

Every comparison copies one set of weights into a dense and a region-wise network. `forced`
runs the region path on every layer (no dense fallback by the cost model), so that each layout
below really exercises it; the cost model is checked on the generator as shipped.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from spade_tf.config import load_config, replace
from spade_tf.layers import SPADE, layout_codes, spade_regions
from spade_tf.models import SPADEGenerator
from spade_tf.semantics import semantic_input

from bench.layouts import landscapes, noise, voronoi

TOLERANCE = 1e-5


@pytest.fixture
def forced(monkeypatch):
    monkeypatch.setattr(spade_regions, "region_pays", lambda *args: True)


def one_hot(labels, label_nc, instances=None, dontcare=False):
    return semantic_input(labels, instances, label_nc=label_nc, contain_dontcare_label=dontcare,
                          use_instance=instances is not None).numpy()


def randomize(network, seed=0, gain=1.0):
    """Random kernels (scaled by fan-in), biases and batch-norm statistics: zero biases would hide
    errors of the per-class tables, and initial statistics (0 and 1) a norm applied in the wrong
    place. Spectral norm's vectors keep their initial values."""
    rng = np.random.default_rng(seed)
    for w in network.trainable_weights:
        shape = tuple(w.shape)
        if len(shape) == 1:
            value = rng.normal(0, 0.1, shape)
        else:
            value = rng.normal(0, gain / np.sqrt(np.prod(shape[:-1])), shape)
        w.assign(value.astype(w.dtype))
    for w in network.non_trainable_weights:
        if w.path.endswith("moving_mean"):
            w.assign(rng.normal(0, 0.3, tuple(w.shape)).astype(w.dtype))
        elif w.path.endswith("moving_variance"):
            w.assign(rng.uniform(0.5, 2.0, tuple(w.shape)).astype(w.dtype))


def pair(make, inputs, seed=0):
    """(dense, regions) built by make(impl), with the same random weights."""
    dense, regions = make("dense"), make("regions")
    dense(*inputs), regions(*inputs)
    randomize(dense, seed)
    regions.set_weights(dense.get_weights())
    return dense, regions


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# --- layouts ------------------------------------------------------------------------------------

def thin_regions(h, w):
    """Stripes and single pixels one pixel wide, and a region touching every border."""
    labels = np.full((h, w), 1)
    labels[:, 3] = 2
    labels[7, :] = 3
    labels[::5, 10] = 4
    labels[0, :] = labels[-1, :] = labels[:, 0] = labels[:, -1] = 0
    return labels


def layout_batch(h=32, w=32, label_nc=6):
    """A batch of different layouts: landscapes, Voronoi, one-pixel regions, noise, one class."""
    rows = [landscapes(1, h, w, label_nc)[0][0], voronoi(1, h, w, label_nc, regions=6)[0][0], thin_regions(h, w),
            noise(1, h, w, label_nc)[0][0], np.full((h, w), 2)]
    return np.stack(rows).astype(np.int64)


def instances_of(labels):
    """Instance ids: each class's pixels split into left and right halves."""
    return labels * 2 + (np.arange(labels.shape[-1]) >= labels.shape[-1] // 2)


# --- the class codes ----------------------------------------------------------------------------

def test_layout_codes_read_label_and_edge_and_refuse_non_one_hot():
    labels = np.array([[[0, 3], [2, 2]]])
    seg = one_hot(labels, 4, instances=np.array([[[0, 1], [2, 2]]]))  # 4 labels + edge channel 4
    codes = np.asarray(layout_codes(seg))
    assert codes[0, 0, 0].tolist() == [0, 4] and codes[0, 1, 1].tolist() == [2, 4]  # every pixel is on an edge
    assert np.asarray(layout_codes(one_hot(labels, 4)))[0].tolist() == [[[0, 4], [3, 4]], [[2, 4], [2, 4]]]
    soft = seg.copy()
    soft[0, 1, 1, 2] = 0.5
    three = seg.copy()
    three[0, 0, 0, 1] = 1
    empty = np.zeros_like(seg)
    assert np.asarray(layout_codes(soft))[0, 1, 1, 0] == spade_regions.NOT_ONE_HOT
    assert np.asarray(layout_codes(three))[0, 0, 0, 0] == spade_regions.NOT_ONE_HOT
    assert np.asarray(layout_codes(empty))[0, 0, 0].tolist() == [5, 5]  # no hot channel: "none"


def test_region_layout_marks_the_5x5_rule():
    labels = np.zeros((1, 12, 12), np.int32)
    labels[0, :, 8:] = 1
    layout = spade_regions.region_layout(one_hot(labels, 2))
    interior = np.zeros((12, 12), bool)
    interior[2:10, 2:6] = True  # 2 from the border and from the boundary; class 1 is too narrow
    np.testing.assert_array_equal(np.asarray(layout["index"])[0] < 1, interior)  # row 0: class 0's (the only one inside)
    assert int(layout["boundary"]) == 144 - interior.sum() and int(layout["pixels"]) == 144
    mixed = np.ones((12, 12), bool)
    mixed[1:11, 1:7] = False  # 3x3 windows inside the image and inside class 0
    mixed[1:11, 9:11] = False
    assert int(layout["mixed"]) == mixed.sum()
    # distinct windows, computed once each: the pixels' 5x5 (3x3) windows of codes, outside the image included
    padded = np.pad(labels[0] + 1, 2)  # 0: outside
    distinct5 = {padded[y:y + 5, x:x + 5].tobytes() for y in range(12) for x in range(12) if not interior[y, x]}
    distinct3 = {padded[y + 1:y + 4, x + 1:x + 4].tobytes() for y in range(12) for x in range(12) if mixed[y, x]}
    assert int(layout["patches"]) == 1 + len(distinct5) < 144 - interior.sum()
    assert tuple(layout["patch_rows"].shape) == (9 * int(layout["patches"]),)
    assert int(layout["lookups"]) == len(distinct3) < mixed.sum() and tuple(layout["mixed_rows"].shape) == (len(distinct3), 9)
    # noise: nearly every pixel is a boundary, the search for repeats is skipped, each window counts once
    rough = spade_regions.region_layout(one_hot(noise(1, 12, 12, 6)[0], 6))
    assert int(rough["patches"]) == int(rough["boundary"]) == 144 and int(rough["lookups"]) == int(rough["mixed"])


def test_cost_model_picks_the_path_the_per_layer_measurements_found_faster():
    """`region_pays` (constants from `bench_regions --calibrate`) on layers of the two generators, where
    the measured per-layer ratios were clear: regions on landscapes; dense on noise for Cityscapes' 36
    channels at 128x128 and 256x256 (measured 0.61x and 0.48x); ADE20K's 151 channels at 16x16, 1024
    wide: regions even on noise (measured 1.66x: no 151-channel convolution)."""
    def pays(kind, semantic_nc, size, channels):
        labels, instances = {"landscapes": landscapes, "noise": noise}[kind](1, size, size, semantic_nc - 1)
        ade = semantic_nc == 151
        seg = semantic_input(labels, None if ade else instances, label_nc=semantic_nc - 1, contain_dontcare_label=ade,
                             use_instance=not ade)
        return bool(spade_regions.region_pays(spade_regions.region_layout(seg), semantic_nc, 128, channels))

    assert pays("landscapes", 36, 128, 128) and not pays("noise", 36, 128, 128)
    assert pays("landscapes", 151, 256, 64) and not pays("noise", 36, 256, 64)
    assert pays("noise", 151, 16, 1024)


# --- the layer ----------------------------------------------------------------------------------

@pytest.mark.parametrize("instances, dontcare, norm", [(False, False, "batch"), (True, True, "batch"),
                                                    (False, True, "instance")])
def test_spade_layer_equals_dense_on_every_layout(forced, instances, dontcare, norm):
    """Batch norm at inference is folded into the region path's tables; instance norm is not."""
    labels = layout_batch(label_nc=6)
    if dontcare:
        labels[:, 12:16, 12:20] = 255
    seg = one_hot(labels, 6, instances_of(labels) if instances else None, dontcare)
    x = np.random.default_rng(1).normal(size=(len(labels), 16, 16, 8)).astype("float32")  # half resolution
    full = np.random.default_rng(2).normal(size=(len(labels), 32, 32, 8)).astype("float32")
    for features in (x, full):
        dense, regions = pair(lambda impl: SPADE(norm, 3, 16, impl), (features, seg))
        assert max_diff(dense(features, seg), regions(features, seg)) <= TOLERANCE
        graph = tf.function(lambda a, b: regions(a, b))
        assert max_diff(dense(features, seg), graph(features, seg)) <= TOLERANCE


def test_non_one_hot_input_and_other_kernel_sizes_run_dense(forced):
    seg = np.random.default_rng(0).random((2, 16, 16, 5)).astype("float32")
    x = np.random.default_rng(1).normal(size=(2, 16, 16, 4)).astype("float32")
    dense, regions = pair(lambda impl: SPADE("instance", 3, 8, impl), (x, seg))
    assert max_diff(dense(x, seg), regions(x, seg)) <= TOLERANCE
    assert max_diff(dense(x, seg, training=True), regions(x, seg, training=True)) <= TOLERANCE
    seg = one_hot(layout_batch(16, 16, 5)[:2], 5)
    dense, regions = pair(lambda impl: SPADE("instance", 5, 8, impl), (x, seg))
    assert max_diff(dense(x, seg), regions(x, seg)) <= TOLERANCE
    with pytest.raises(ValueError, match="spade_impl 'sparse' is not one of dense, regions"):
        SPADE(spade_impl="sparse")


# --- the generator ------------------------------------------------------------------------------

def generator_pair(semantic_nc, seed=0, gain=0.5, **kwargs):
    """(dense, regions) generators with the same random weights, after one training-mode pass on
    noise layouts (batch 4) with batch-norm momentum 0: spectral norm's vectors then match the
    random kernels and batch norm normalises, so the random network does not amplify rounding."""
    make = lambda impl: SPADEGenerator(semantic_nc, spade_impl=impl, **kwargs)  # noqa: E731
    dense, regions = make("dense"), make("regions")
    randomize(dense, seed, gain=gain)
    h, w = dense.image_size
    seg = np.eye(semantic_nc, dtype="float32")[np.random.default_rng(seed).integers(0, semantic_nc, (4, h, w))]
    inputs = {"semantics": seg, "z": np.random.default_rng(seed).normal(size=(4, 256)).astype("float32")}
    norms = [layer for layer in dense._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    dense(inputs if dense.use_vae else seg, training=True)
    for layer in norms:
        layer.momentum = 0.9
    regions.set_weights(dense.get_weights())
    return dense, regions


def assert_generators_agree(dense, regions, inputs):
    expected = np.asarray(dense(inputs, training=False))
    assert expected.std() > 0.1, "the test network's images are too flat for this comparison"
    assert max_diff(expected, regions(inputs, training=False)) <= TOLERANCE
    graph = tf.function(lambda s: regions(s, training=False))
    assert max_diff(expected, graph(inputs)) <= TOLERANCE


@pytest.mark.parametrize("depth, size", [("normal", 64), ("more", 128), ("most", 256)])
def test_generator_equals_dense_at_every_depth(forced, depth, size):
    labels = landscapes(2, size, size, 8)[0]
    labels[1] = voronoi(1, size, size, 8, regions=12, seed=3)[0][0]
    seg = one_hot(labels, 8, instances_of(labels))
    dense, regions = generator_pair(9, ngf=4, num_upsampling_layers=depth, crop_size=size, gain=0.3)
    assert dense.count_params() == regions.count_params()
    assert [w.path for w in dense.weights] == [w.path for w in regions.weights]
    assert_generators_agree(dense, regions, seg)


def test_generator_equals_dense_with_the_cost_model_aspect_ratio_and_noise():
    labels = np.concatenate([landscapes(1, 64, 128, 6)[0], noise(1, 64, 128, 6)[0]])
    seg = one_hot(labels, 6, dontcare=True)
    dense, regions = generator_pair(7, ngf=4, crop_size=128, aspect_ratio=2.0)
    assert_generators_agree(dense, regions, seg)


def test_vae_generator_equals_dense(forced):
    labels = voronoi(2, 64, 64, 5, regions=10)[0]
    z = np.random.default_rng(0).normal(size=(2, 256)).astype("float32")
    inputs = {"semantics": one_hot(labels, 5, dontcare=True), "z": z}
    dense, regions = generator_pair(6, ngf=4, use_vae=True, crop_size=64)
    assert_generators_agree(dense, regions, inputs)


def test_imported_nvlabs_weights_equal_dense(forced, nvlabs_fixture):
    from spade_tf.io.nvlabs import config_from_opt, import_checkpoint

    cfg = config_from_opt(nvlabs_fixture / "options.txt")
    regions = import_checkpoint(nvlabs_fixture, replace(cfg, {"model": {"spade_impl": "regions"}}))[0]
    dense = import_checkpoint(nvlabs_fixture, replace(cfg, {"model": {"spade_impl": "dense"}}))[0]
    inputs = np.load(nvlabs_fixture / "inputs.npz")
    z = inputs["z"]
    h, w = cfg.image_size
    labels = landscapes(len(z), h, w, cfg.data.label_nc)[0]
    fixture_layout = inputs["semantics"].transpose(0, 2, 3, 1)
    for seg in (one_hot(labels, cfg.data.label_nc, instances_of(labels)), fixture_layout):
        expected = np.asarray(dense({"semantics": seg, "z": z}, training=False))
        assert max_diff(expected, regions({"semantics": seg, "z": z}, training=False)) <= TOLERANCE


def test_training_path_gradients_equal_dense():
    labels = layout_batch(64, 64, 5)[:3]
    seg = one_hot(labels, 5, instances_of(labels))
    dense, regions = generator_pair(6, ngf=4, crop_size=64, gain=0.3)  # latent 2x2: batch norm over 12 values
    target = np.random.default_rng(5).uniform(-1, 1, (3, 64, 64, 3)).astype("float32")

    def gradients(g):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((g(seg, training=True) - target) ** 2)
        return [np.asarray(tf.convert_to_tensor(x)) for x in tape.gradient(loss, g.trainable_weights)]

    pairs = {w.path: (gd, gr) for w, gd, gr in zip(dense.trainable_weights, gradients(dense), gradients(regions))}
    # A bias followed by batch norm (fc's, conv_0's) has a zero gradient in exact arithmetic: what is
    # computed is rounding noise, so variables whose dense gradient is that small are not compared.
    scale = np.median([np.linalg.norm(gd) for gd, _ in pairs.values()])
    ratios = {path: np.linalg.norm(gr - gd) / np.linalg.norm(gd) for path, (gd, gr) in pairs.items()
              if np.linalg.norm(gd) > 1e-4 * scale}
    worst = sorted(ratios, key=ratios.get)[-3:]
    assert ratios[worst[-1]] <= TOLERANCE, {path: f"{ratios[path]:.2e}" for path in worst}
    assert sum("mlp_shared" in path for path in ratios) == sum("mlp_shared" in path for path in pairs) > 0


def test_mixed_bfloat16_is_as_close_to_fp32_as_dense(forced):
    labels = landscapes(2, 64, 64, 8)[0]
    seg = one_hot(labels, 8, instances_of(labels))
    dense32, _ = generator_pair(9, ngf=4, crop_size=64)
    expected = np.asarray(dense32(seg, training=False))
    errors = {}
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        for impl in ("dense", "regions"):
            g = SPADEGenerator(9, ngf=4, crop_size=64, spade_impl=impl)
            g.set_weights(dense32.get_weights())
            errors[impl] = max_diff(expected, g(seg, training=False))
    finally:
        keras.config.set_dtype_policy(previous)
    assert errors["dense"] > 0  # bf16 really ran
    assert errors["regions"] <= 2 * errors["dense"] + 1e-3, errors


# --- the switch does not block existing runs or exports --------------------------------------------

def test_switch_does_not_block_resuming(tmp_path):
    from spade_tf.training.checkpoints import check_resumable

    saved = load_config("synthetic", ["model.spade_impl=dense"])
    saved.to_yaml(tmp_path / "config.yaml")
    check_resumable(tmp_path, load_config("synthetic", ["model.spade_impl=regions"]))
    with pytest.raises(ValueError, match="model.ngf"):
        check_resumable(tmp_path, load_config("synthetic", ["model.ngf=8"]))
    text = (tmp_path / "config.yaml").read_text().replace("  spade_impl: dense\n", "")
    (tmp_path / "config.yaml").write_text(text)  # a run saved before the switch existed
    check_resumable(tmp_path, load_config("synthetic"))
