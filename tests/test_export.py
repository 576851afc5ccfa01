"""The SavedModel export: layout, signatures, in-graph checks, warm-up, spectral-norm folding, CLI.

Two tiny exports are shared by the tests: a model with instance maps and a don't-care label
(64x64, written through export.py's `main`) and a VAE model (32x32, through `export_model`).
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from spade_tf.config import load_config
from spade_tf.export import export_model, writer
from spade_tf.export.fold import fold_spectral_norm, inference_networks
from spade_tf.export.module import ExportModule
from spade_tf.layers import SpectralNorm
from spade_tf.models import build_encoder, build_generator
from spade_tf.semantics import semantic_input
from spade_tf.shared import REPO_ROOT
from spade_tf.training.checkpoints import save_imported

from helpers import tiny_config

# helpers.TINY, and on purpose: ngf 4 (these tests save several SavedModels) and weights drawn with
# std 0.1, so that untrained images vary visibly.
EXPORT = ["model.ngf=4", "model.init_type=normal", "model.init_variance=0.1", "export.warmup_requests=2"]
PLAIN = EXPORT + ["data.label_nc=5", "data.contain_dontcare_label=true", "data.no_instance=false", "data.crop_size=64"]
VAE = EXPORT + ["data.label_nc=4", "data.no_instance=true", "data.crop_size=32", "model.use_vae=true"]
Z_DIM = 256


def _load_cli():
    spec = importlib.util.spec_from_file_location("export_cli", REPO_ROOT / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _semantics(cfg, label_map, instance_map=None):
    return semantic_input(
        label_map, instance_map, label_nc=cfg.data.label_nc,
        contain_dontcare_label=cfg.data.contain_dontcare_label, use_instance=not cfg.data.no_instance,
    )


def _trained_like(cfg, seed=0):
    """Freshly built networks after a few training-mode calls, so that spectral norm's u, v and
    batch-norm statistics have moved away from their initial values."""
    generator, encoder = build_generator(cfg, seed=seed), build_encoder(cfg, seed=seed + 1)
    rng = np.random.default_rng(seed)
    h, w = cfg.image_size
    for _ in range(3):
        labels = rng.integers(0, cfg.data.label_nc, (2, h, w))
        instances = None if cfg.data.no_instance else rng.integers(0, 3, (2, h, w))
        semantics = _semantics(cfg, labels, instances)
        if cfg.model.use_vae:
            generator({"semantics": semantics, "z": rng.standard_normal((2, Z_DIM)).astype("float32")}, training=True)
            encoder(rng.uniform(-1, 1, (2, h, w, 3)).astype("float32"), training=True)
        else:
            generator(semantics, training=True)
    return generator, encoder


def _to_uint8(image):
    return np.round(np.clip((np.asarray(image, np.float64) + 1) * 127.5, 0, 255)).astype(np.uint8)


def _assert_within_one_level(actual, expected):
    assert expected.std() > 10, "the test networks' images are too flat for this comparison"
    assert actual.dtype == np.uint8 and actual.shape == expected.shape
    assert np.abs(actual.astype(int) - expected.astype(int)).max() <= 1


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """Instance maps and a don't-care label; exported by the CLI from a run folder as version 3."""
    tmp = tmp_path_factory.mktemp("plain")
    cfg = tiny_config(*PLAIN)
    generator, _ = _trained_like(cfg)
    save_imported(tmp / "run", cfg, generator)
    exports = tmp / "exports"
    code = _load_cli().main(["--run_dir", str(tmp / "run"), "--export_dir", str(exports), "--version", "3"])
    assert code == 0
    return types.SimpleNamespace(cfg=cfg, generator=generator, run_dir=tmp / "run", exports=exports, path=exports / "3")


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    """A VAE model (fixed 32x32), exported with `export_model` as the next free version."""
    tmp = tmp_path_factory.mktemp("vae")
    cfg = tiny_config(*VAE)
    generator, encoder = _trained_like(cfg, seed=10)
    path = export_model(cfg, generator, encoder, export_dir=tmp / "exports")
    return types.SimpleNamespace(cfg=cfg, generator=generator, encoder=encoder, exports=tmp / "exports", path=path)


@pytest.fixture(scope="module")
def loaded_plain(plain):
    return tf.saved_model.load(str(plain.path))


@pytest.fixture(scope="module")
def loaded_vae(vae):
    return tf.saved_model.load(str(vae.path))


# --- layout and assets ---------------------------------------------------------------------
CONTRACT_KEYS = {  # docs/EXPORT_CONTRACT.md, spade_tf_client.contract.LabelsJson
    "model_name", "class_names", "palette", "label_nc", "contain_dontcare_label", "unknown_label", "use_instance",
    "use_vae", "z_dim", "image_size", "size_multiple", "min_size", "aspect_ratio", "signatures",
}


def test_version_folder_and_labels_json(plain, vae):
    assert sorted(p.name for p in plain.exports.iterdir()) == ["3"]  # nothing left beside it
    assert sorted(p.name for p in vae.exports.iterdir()) == ["1"]
    for path in (plain.path, vae.path):
        assert (path / "saved_model.pb").is_file() and (path / "variables").is_dir()

    labels = json.loads((plain.path / "assets.extra" / "labels.json").read_text())
    assert set(labels) == CONTRACT_KEYS
    assert labels["signatures"] == ["serving_default", "with_seed"]
    assert (labels["label_nc"], labels["contain_dontcare_label"], labels["unknown_label"]) == (5, True, 255)
    assert (labels["use_instance"], labels["use_vae"]) == (True, False)
    assert (labels["image_size"], labels["size_multiple"], labels["aspect_ratio"]) == ([64, 64], 32, 1.0)
    assert len(labels["class_names"]) == 5 and np.array(labels["palette"]).shape == (5, 3)

    labels = json.loads((vae.path / "assets.extra" / "labels.json").read_text())
    assert set(labels) == CONTRACT_KEYS
    assert labels["signatures"] == ["encode_style", "serving_default", "with_seed", "with_z"]
    assert (labels["use_vae"], labels["use_instance"], labels["unknown_label"]) == (True, False, None)
    assert (labels["image_size"], labels["z_dim"]) == ([32, 32], 256)


def test_pix2pixhd_labels_json_states_the_size_multiple_the_exported_model_accepts(tmp_path):
    """2^resnet_n_downsample (here 4), not the SPADE generator's 2^5: a 36x36 layout works, 34x34 fails."""
    cfg = load_config("synthetic", [
        "model.netG=pix2pixhd", "model.norm_G=instance", "model.ngf=4", "model.resnet_n_downsample=2",
        "model.resnet_n_blocks=1", "data.crop_size=32", "export.warmup_requests=0",
    ])
    path = export_model(cfg, build_generator(cfg), export_dir=tmp_path)
    labels = json.loads((path / "assets.extra" / "labels.json").read_text())
    assert labels["size_multiple"] == 4
    assert labels["min_size"] == 8  # 4 x ((3 - 1) // 2 + 1): the bottleneck must be larger than its reflection pad
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    for side in (36, 8):
        maps = {"label_map": tf.zeros([1, side, side], tf.uint8), "instance_map": tf.zeros([1, side, side], tf.int32)}
        assert serve(**maps)["image"].shape == (1, side, side, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiples of 4"):
        serve(label_map=tf.zeros([1, 34, 34], tf.uint8), instance_map=tf.zeros([1, 34, 34], tf.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 8x8"):  # not a failure deep inside the net
        serve(label_map=tf.zeros([1, 4, 4], tf.uint8), instance_map=tf.zeros([1, 4, 4], tf.int32))


def test_config_saved_for_provenance(plain):
    saved = load_config(str(plain.path / "assets.extra" / "config.yaml"))
    assert saved.to_dict() == plain.cfg.to_dict()


def test_no_xla_in_exported_functions(plain, vae):
    for path in (plain.path, vae.path):
        model = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
        functions = model.meta_graphs[0].graph_def.library.function
        assert functions
        for function in functions:
            assert not function.attr["_XlaMustCompile"].b, function.signature.name
            assert not any(node.op.startswith("Xla") for node in function.node_def)


# --- a process without our code --------------------------------------------------------------
LOAD_AND_RUN = """
import sys
for name in ("spade_tf", "keras"):  # importing these would fail: the model must not need them
    sys.modules[name] = None
import numpy as np
import tensorflow as tf
args = sys.argv[1:]
for model_dir, inputs_path, outputs_path in zip(args[::3], args[1::3], args[2::3]):
    model = tf.saved_model.load(model_dir)
    inputs = np.load(inputs_path)
    calls = {}
    for key in inputs.files:  # <signature>/<call>/<input>
        signature, call, name = key.split("/")
        calls.setdefault((signature, call), {})[name] = inputs[key]
    outputs = {}
    for (signature, call), kwargs in calls.items():
        for name, value in model.signatures[signature](**kwargs).items():
            outputs[f"{signature}/{call}/{name}"] = value.numpy()
    np.savez(outputs_path, **outputs)
"""


def _plain_calls():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, (2, 64, 64)).astype(np.uint8)
    labels[:, :8] = 255  # the don't-care label
    layout = {"label_map": labels, "instance_map": rng.integers(0, 3, (2, 64, 64)).astype(np.int32)}
    return {
        ("serving_default", "a"): layout,
        ("with_seed", "a"): {**layout, "seed": np.array([1, 2], np.int64)},
        ("with_seed", "b"): {**layout, "seed": np.array([7, 8], np.int64)},
    }


def _vae_calls():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, (2, 32, 32)).astype(np.uint8)
    return {
        ("serving_default", "a"): {"label_map": labels},
        ("serving_default", "b"): {"label_map": labels},
        ("with_seed", "a"): {"label_map": labels, "seed": np.array([5, 6], np.int64)},
        ("with_seed", "b"): {"label_map": labels, "seed": np.array([5, 6], np.int64)},
        ("with_seed", "swapped"): {"label_map": labels[::-1], "seed": np.array([6, 5], np.int64)},
        ("with_z", "a"): {"label_map": labels, "z": rng.standard_normal((2, Z_DIM)).astype(np.float32)},
        ("encode_style", "a"): {"image": rng.integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)},
    }


@pytest.fixture(scope="module")
def fresh_process(plain, vae, tmp_path_factory):
    """kind -> (calls, outputs): both exports run by one Python process that has none of our code."""
    tmp = tmp_path_factory.mktemp("fresh_process")
    jobs = {"plain": (plain.path, _plain_calls()), "vae": (vae.path, _vae_calls())}
    args = []
    for kind, (path, calls) in jobs.items():
        flat = {f"{sig}/{call}/{name}": v for (sig, call), inputs in calls.items() for name, v in inputs.items()}
        np.savez(tmp / f"{kind}_in.npz", **flat)
        args += [str(path), str(tmp / f"{kind}_in.npz"), str(tmp / f"{kind}_out.npz")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_RUN, *args], cwd=tmp, env=env, timeout=180, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {}
    for kind, (_, calls) in jobs.items():
        with np.load(tmp / f"{kind}_out.npz") as outputs:
            runs[kind] = calls, {key: outputs[key] for key in outputs.files}
    return runs


@pytest.mark.slow
def test_plain_model_runs_without_our_code(plain, fresh_process):
    calls, out = fresh_process["plain"]
    layout = calls[("serving_default", "a")]
    labels, instances = layout["label_map"], layout["instance_map"]
    expected = _to_uint8(plain.generator(_semantics(plain.cfg, labels, instances), training=False))
    _assert_within_one_level(out["serving_default/a/image"], expected)
    # Without VAE the seed changes nothing.
    np.testing.assert_array_equal(out["with_seed/a/image"], out["serving_default/a/image"])
    np.testing.assert_array_equal(out["with_seed/b/image"], out["serving_default/a/image"])


@pytest.mark.slow
def test_vae_model_runs_without_our_code(vae, fresh_process):
    calls, out = fresh_process["vae"]
    labels, z = calls[("with_z", "a")]["label_map"], calls[("with_z", "a")]["z"]
    photo = calls[("encode_style", "a")]["image"]
    semantics = _semantics(vae.cfg, labels)

    def generate(z):
        return _to_uint8(vae.generator({"semantics": semantics, "z": z}, training=False))

    seeded_z = np.stack([tf.random.stateless_normal([Z_DIM], seed=[s, 0], alg="philox") for s in (5, 6)])
    _assert_within_one_level(out["with_seed/a/image"], generate(seeded_z))
    np.testing.assert_array_equal(out["with_seed/a/image"], out["with_seed/b/image"])
    np.testing.assert_array_equal(out["with_seed/swapped/image"], out["with_seed/a/image"][::-1])  # z per example
    _assert_within_one_level(out["with_z/a/image"], generate(z))
    assert not np.array_equal(out["serving_default/a/image"], out["serving_default/b/image"])  # z drawn per call

    mu, logvar = vae.encoder(photo.astype(np.float32) / 127.5 - 1, training=False)
    np.testing.assert_allclose(out["encode_style/a/mu"], mu, atol=1e-4)
    np.testing.assert_allclose(out["encode_style/a/logvar"], logvar, atol=1e-4)
    eps = (out["encode_style/a/z"] - out["encode_style/a/mu"]) / np.exp(0.5 * out["encode_style/a/logvar"])
    assert 0.8 < eps.std() < 1.2 and abs(eps.mean()) < 0.2  # z ~ N(mu, exp(logvar))


# --- saved_model_cli -------------------------------------------------------------------------
def _cli_signatures(*paths):
    """For each path, {signature: {"inputs"/"outputs": {name: (dtype, shape)}}} as `saved_model_cli show --all`
    prints them (the processes run side by side)."""
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    processes = [
        subprocess.Popen([cli, "show", "--all", "--dir", str(path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
        for path in paths
    ]
    results = []
    for process in processes:
        text = process.communicate(timeout=120)[0]
        assert process.returncode == 0
        results.append(_parse_signatures(text))
    return results


def _parse_signatures(text):
    signatures = {}
    for block in text.split("signature_def['")[1:]:
        name = block.split("'", 1)[0]
        tensors = re.findall(r"(inputs|outputs)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([^)]*\))", block)
        signatures[name] = {}
        for kind, tensor, dtype, shape in tensors:
            signatures[name].setdefault(kind, {})[tensor] = (dtype, shape)
    signatures.pop("__saved_model_init_op", None)
    return signatures


@pytest.mark.slow
def test_saved_model_cli_lists_the_contract_signatures(plain, vae):
    plain_signatures, vae_signatures = _cli_signatures(plain.path, vae.path)
    layout = {"label_map": ("DT_UINT8", "(-1, -1, -1)"), "instance_map": ("DT_INT32", "(-1, -1, -1)")}
    image = {"image": ("DT_UINT8", "(-1, -1, -1, 3)")}
    assert plain_signatures == {
        "serving_default": {"inputs": layout, "outputs": image},
        "with_seed": {"inputs": {**layout, "seed": ("DT_INT64", "(-1)")}, "outputs": image},
    }
    layout = {"label_map": ("DT_UINT8", "(-1, 32, 32)")}  # a VAE model's size is fixed
    fixed_image = {"image": ("DT_UINT8", "(-1, 32, 32, 3)")}
    latent = ("DT_FLOAT", "(-1, 256)")
    assert vae_signatures == {
        "serving_default": {"inputs": layout, "outputs": fixed_image},
        "with_seed": {"inputs": {**layout, "seed": ("DT_INT64", "(-1)")}, "outputs": fixed_image},
        "with_z": {"inputs": {**layout, "z": latent}, "outputs": fixed_image},
        "encode_style": {"inputs": image, "outputs": {"z": latent, "mu": latent, "logvar": latent}},
    }


# --- warm-up ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["plain", "vae"])
def test_warmup_requests_parse_and_run(kind, request):
    export = request.getfixturevalue(kind)
    model = request.getfixturevalue(f"loaded_{kind}")
    path = export.path / "assets.extra" / "tf_serving_warmup_requests"
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]
    per_signature = {}
    for record in records:
        request_ = record.predict_log.request
        per_signature[request_.model_spec.signature_name] = per_signature.get(request_.model_spec.signature_name, 0) + 1
        inputs = {name: tf.make_ndarray(tensor) for name, tensor in request_.inputs.items()}
        outputs = model.signatures[request_.model_spec.signature_name](**inputs)
        layout = inputs.get("label_map", inputs.get("image"))
        assert layout.shape[:3] == (1, *export.cfg.image_size)  # batch 1 at the trained size
        assert all(v.shape[0] == 1 for v in outputs.values())
    assert per_signature == {name: export.cfg.export.warmup_requests for name in model.signatures}


# --- bad input fails inside the graph --------------------------------------------------------
def test_bad_layouts_fail_with_clear_errors(loaded_plain):
    serve = loaded_plain.signatures["serving_default"]
    seeded = loaded_plain.signatures["with_seed"]

    def layout(h=64, w=64, value=0):
        return {"label_map": np.full((1, h, w), value, np.uint8), "instance_map": np.zeros((1, h, w), np.int32)}

    assert serve(**layout(value=255))["image"].shape == (1, 64, 64, 3)  # the don't-care label is fine
    assert serve(**layout(32, 32))["image"].shape == (1, 32, 32, 3)  # so is another multiple of 32
    cases = [
        (layout(value=7), "outside the label set"),
        (layout(48, 48), r"multiples of 32, e.g. 64x64; got height, width:\] \[48\] \[48\]"),
        (layout(64, 128), "aspect ratio 1.0"),
        ({**layout(), "instance_map": np.zeros((1, 64, 32), np.int32)}, "instance_map must have the same shape"),
    ]
    for inputs, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            serve(**inputs)
    with pytest.raises(tf.errors.InvalidArgumentError, match="seed must have one entry per example"):
        seeded(**layout(), seed=np.array([1, 2], np.int64))


def test_vae_bad_inputs_fail_with_clear_errors(vae, loaded_vae):
    labels = np.zeros((1, 32, 32), np.uint8)
    for value in (4, 255):  # no don't-care label here
        with pytest.raises(tf.errors.InvalidArgumentError, match="outside the label set"):
            loaded_vae.signatures["serving_default"](label_map=labels + value)
    with pytest.raises(tf.errors.InvalidArgumentError, match="z must have one entry per example"):
        loaded_vae.signatures["with_z"](label_map=labels, z=np.zeros((2, Z_DIM), np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="z must hold finite numbers"):
        loaded_vae.signatures["with_z"](label_map=labels, z=np.full((1, Z_DIM), np.nan, np.float32))
    # The signature fixes the size; a server that feeds the graph directly meets the in-graph check.
    module = ExportModule(vae.cfg, vae.generator, vae.encoder)
    check = tf.function(module.preprocess, input_signature=[tf.TensorSpec([None, None, None], tf.uint8)])
    assert check(labels).shape == (1, 32, 32, 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="only 32x32 images"):
        check(np.zeros((1, 64, 64), np.uint8))


# --- spectral norm folding and precision -----------------------------------------------------
def _spectral_layers(model):
    return [layer for layer in model._flatten_layers(recursive=True) if isinstance(layer, SpectralNorm)]


def test_folding_keeps_outputs_and_removes_spectral_norm(plain, vae):
    rng = np.random.default_rng(3)
    semantics = _semantics(plain.cfg, rng.integers(0, 5, (2, 64, 64)), rng.integers(0, 3, (2, 64, 64)))
    folded, _ = inference_networks(plain.cfg, plain.generator)
    assert _spectral_layers(plain.generator) and not _spectral_layers(folded)
    np.testing.assert_allclose(folded(semantics), plain.generator(semantics, training=False), atol=1e-5)

    folded, folded_encoder = inference_networks(vae.cfg, vae.generator, vae.encoder)
    assert _spectral_layers(vae.encoder) and not _spectral_layers(folded) and not _spectral_layers(folded_encoder)
    inputs = {"semantics": _semantics(vae.cfg, rng.integers(0, 4, (2, 32, 32))),
              "z": rng.standard_normal((2, Z_DIM)).astype(np.float32)}
    np.testing.assert_allclose(folded(inputs), vae.generator(inputs, training=False), atol=1e-5)
    photo = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    for a, b in zip(folded_encoder(photo), vae.encoder(photo, training=False)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_folding_pix2pixhd():
    cfg = load_config("synthetic", [
        "model.netG=pix2pixhd", "model.norm_G=spectralinstance", "model.ngf=4", "model.resnet_n_downsample=2",
        "model.resnet_n_blocks=1", "data.crop_size=32",
    ])
    generator = build_generator(cfg)
    semantics = _semantics(cfg, np.random.default_rng(4).integers(0, 8, (1, 32, 32)), np.zeros((1, 32, 32)))
    generator(semantics, training=True)
    folded, _ = inference_networks(cfg, generator)
    assert _spectral_layers(generator) and not _spectral_layers(folded)
    np.testing.assert_allclose(folded(semantics), generator(semantics, training=False), atol=1e-5)


def test_folding_refuses_networks_of_other_configs(plain):
    other = build_generator(tiny_config(*PLAIN, "model.ngf=8", "model.norm_G=spadesyncbatch3x3"))
    with pytest.raises(ValueError, match="build both from the same config"):
        fold_spectral_norm(plain.generator, other)


@pytest.mark.slow
def test_bfloat16_export_is_close_to_float32(plain, loaded_plain, tmp_path):
    cfg = tiny_config(*PLAIN, "export.precision=bfloat16", "export.warmup_requests=0")
    folded, _ = inference_networks(cfg, plain.generator)
    assert folded.get_layer("fc").compute_dtype == "bfloat16"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    path = export_model(cfg, plain.generator, export_dir=tmp_path)
    rng = np.random.default_rng(5)
    inputs = {"label_map": rng.integers(0, 5, (2, 64, 64)).astype(np.uint8),
              "instance_map": rng.integers(0, 3, (2, 64, 64)).astype(np.int32)}
    half = tf.saved_model.load(str(path)).signatures["serving_default"](**inputs)["image"].numpy()
    full = loaded_plain.signatures["serving_default"](**inputs)["image"].numpy()
    assert half.dtype == np.uint8 and half.shape == full.shape
    mse = np.mean((half.astype(float) - full.astype(float)) ** 2)
    psnr = 10 * np.log10(255**2 / mse) if mse else np.inf
    print(f"bfloat16 vs float32 export: PSNR {psnr:.1f} dB")
    assert psnr > 40


# --- versions and atomic writes --------------------------------------------------------------
def test_versions_are_integers_next_free_and_never_overwritten(tmp_path):
    for name in ("2", "10", "abc", ".tmp-11-999"):  # .tmp-11-999: left by an exporter that crashed
        (tmp_path / name).mkdir()
    (tmp_path / "12").write_text("a file, not a version")
    assert writer.versions(tmp_path) == [2, 10]

    def write(folder):
        folder.mkdir()
        (folder / "saved_model.pb").write_text("model")

    assert writer.write_version(tmp_path, None, write) == tmp_path / "11"
    assert writer.write_version(tmp_path, 4, write) == tmp_path / "4"
    with pytest.raises(FileExistsError, match="version 4 already exists"):
        writer.write_version(tmp_path, 4, write)
    with pytest.raises(ValueError, match="positive integer"):
        writer.write_version(tmp_path, -1, write)
    assert (tmp_path / "4" / "saved_model.pb").read_text() == "model"


def test_a_failed_write_leaves_no_version(tmp_path):
    def crash(folder):
        folder.mkdir()
        (folder / "saved_model.pb").write_text("half a model")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        writer.write_version(tmp_path, None, crash)
    assert list(tmp_path.iterdir()) == []


def test_too_many_warmup_records_are_refused(tmp_path):
    record = writer.warmup_record("spade", "serving_default", {"label_map": np.zeros((1, 2, 2), np.uint8)})
    with pytest.raises(ValueError, match="at most 1000"):
        writer.write_warmup_requests(tmp_path / "warmup", [record] * 1001)


# --- command line ----------------------------------------------------------------------------
def test_cli_bad_input_exits_2_with_one_line(plain, tmp_path, capsys):
    main = _load_cli().main
    no_checkpoint = tmp_path / "empty_run"
    no_checkpoint.mkdir()
    plain.cfg.to_yaml(no_checkpoint / "config.yaml")
    cases = [
        (["--run_dir", str(tmp_path / "missing")], "not a spade-tf run folder"),
        (["--run_dir", str(no_checkpoint)], "no checkpoint"),
        (["--run_dir", str(plain.run_dir), "--checkpoint", str(plain.run_dir / "ckpt-9")], "ckpt-9 not found"),
        (["--run_dir", str(plain.run_dir), "model.ngff=4"], "unknown config key"),
        (["--run_dir", str(plain.run_dir), "--export_dir", str(plain.exports), "--version", "3"], "already exists"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("export.py: error:") and message in lines[0], lines
    assert sorted(p.name for p in plain.exports.iterdir()) == ["3"]


# --- region-wise SPADE in the export ----------------------------------------------------------------

def test_region_wise_export_equals_the_dense_export_within_one_level(plain, loaded_plain, tmp_path):
    """The plain export computes SPADE region-wise (model.spade_impl's default); a dense export of
    the same run gives the same uint8 images to within 1, on layouts with regions, edges, don't-care."""
    from spade_tf.export import export_run
    from spade_tf.evaluation.sources import load_saved_model

    assert plain.cfg.model.spade_impl == "regions"
    dense_path = export_run(plain.run_dir, export_dir=tmp_path / "dense", overrides=["model.spade_impl=dense"])
    dense = tf.saved_model.load(str(dense_path)).signatures["serving_default"]
    labels = np.zeros((2, 64, 64), np.uint8)
    labels[:, :, 20:] = 3
    labels[0, 30:50, 5:15] = 255
    labels[1, 10:12, :] = 1
    labels[1, 40:, 40:] = 4
    instances = (labels.astype(np.int32) * 7 + (np.arange(64) >= 40)).astype(np.int32)
    inputs = {"label_map": tf.constant(labels), "instance_map": tf.constant(instances)}
    _assert_within_one_level(loaded_plain.signatures["serving_default"](**inputs)["image"].numpy(),
                             dense(**inputs)["image"].numpy())
    # an export written before the switch, or with the other value, loads whatever is asked
    assert load_saved_model(dense_path, ["model.spade_impl=regions"]).cfg.model.spade_impl == "dense"
