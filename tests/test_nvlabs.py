"""Importing NVlabs/SPADE checkpoints: exact parity with the reference's outputs, clear errors."""

import numpy as np
import pytest

from spade_tf.config import load_config, replace
from spade_tf.io.nvlabs import ImportMismatch, config_from_opt, import_checkpoint, load_nvlabs_generator, main
from spade_tf.io.torch_pth import CheckpointError
from spade_tf.models import build_generator
from spade_tf.training.checkpoints import restore_networks

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def imported(nvlabs_fixture):
    cfg = config_from_opt(nvlabs_fixture / "options.txt")
    g, d, e = import_checkpoint(nvlabs_fixture, cfg)
    return cfg, g, d, e, np.load(nvlabs_fixture / "inputs.npz"), np.load(nvlabs_fixture / "outputs.npz")


def nchw(x):
    return np.asarray(x).transpose(0, 3, 1, 2)


def test_config_from_opt_txt(imported):
    cfg = imported[0]
    assert (cfg.data.label_nc, cfg.data.no_instance, cfg.semantic_nc) == (5, False, 6)
    assert (cfg.model.ngf, cfg.model.ndf, cfg.model.use_vae, cfg.data.crop_size) == (8, 8, True, 64)
    assert cfg.model.norm_G == "spectralspadesyncbatch3x3" and cfg.train.batch_size == 2


def test_generator_parity(imported):
    cfg, g, _, _, inputs, outputs = imported
    y = g({"semantics": inputs["semantics"].transpose(0, 2, 3, 1), "z": inputs["z"]}, training=False)
    np.testing.assert_allclose(nchw(y), outputs["g_out"], atol=TOLERANCE, rtol=0)


def test_encoder_then_generator_parity(imported):
    _, g, _, e, inputs, outputs = imported
    mu, logvar = e(inputs["image"].transpose(0, 2, 3, 1), training=False)
    np.testing.assert_allclose(np.asarray(mu), outputs["e_mu"], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(np.asarray(logvar), outputs["e_logvar"], atol=TOLERANCE, rtol=0)
    y = g({"semantics": inputs["semantics"].transpose(0, 2, 3, 1), "z": mu}, training=False)
    np.testing.assert_allclose(nchw(y), outputs["g_out_zmu"], atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("kind", ["fake", "real"])
def test_discriminator_parity_for_every_feature(imported, kind):
    _, _, d, _, inputs, outputs = imported
    image = outputs["g_out"] if kind == "fake" else inputs["image"]
    feats = d(np.concatenate([inputs["semantics"], image], 1).transpose(0, 2, 3, 1), training=False)
    assert len(feats) == 2 and all(len(scale) == 5 for scale in feats)
    for s, scale in enumerate(feats):
        for i, f in enumerate(scale):
            np.testing.assert_allclose(nchw(f), outputs[f"d_{kind}_scale{s}_layer{i}"], atol=TOLERANCE, rtol=0)


def test_checkpoint_for_another_configuration_names_the_differences(nvlabs_fixture):
    cfg = replace(config_from_opt(nvlabs_fixture / "options.txt"), {"data.label_nc": 7})
    with pytest.raises(ImportMismatch) as e:
        load_nvlabs_generator(build_generator(cfg), nvlabs_fixture / "latest_net_G.pth")
    assert "head_0.norm_0.mlp_shared.0.weight: checkpoint (128, 6, 3, 3) vs model (3, 3, 8, 128)" in str(e.value)
    assert "latest_net_G.pth does not fit" in str(e.value)


def test_a_file_that_is_not_a_generator_checkpoint(nvlabs_fixture, tmp_path):
    cfg = config_from_opt(nvlabs_fixture / "options.txt")
    with pytest.raises(ImportMismatch, match=r"(?s)missing in the checkpoint \(\d+\): fc.weight.*unexpected"):
        load_nvlabs_generator(build_generator(cfg), nvlabs_fixture / "latest_net_D.pth")
    not_torch = tmp_path / "latest_net_G.pth"
    not_torch.write_text("hello")
    with pytest.raises(CheckpointError, match="latest_net_G.pth"):
        load_nvlabs_generator(build_generator(cfg), not_torch)


def test_import_command_writes_a_run_folder_that_restores(nvlabs_fixture, tmp_path, capsys):
    out = tmp_path / "imported"
    assert main(["--checkpoint_dir", str(nvlabs_fixture), "--opt", str(nvlabs_fixture / "options.txt"),
                 "--out", str(out)]) == 0
    cfg, g, e = restore_networks(out)
    inputs = np.load(nvlabs_fixture / "inputs.npz")
    y = g({"semantics": inputs["semantics"].transpose(0, 2, 3, 1), "z": inputs["z"]})
    np.testing.assert_allclose(nchw(y), np.load(nvlabs_fixture / "outputs.npz")["g_out"], atol=TOLERANCE)
    assert e is not None and cfg.model.use_vae
    assert (cfg.name, cfg.train.checkpoints_dir) == ("imported", str(tmp_path))  # the run folder is --out itself
    # no opt.txt beside the checkpoint (the fixture names it options.txt) and no --opt: an error naming the file
    capsys.readouterr()
    assert main(["--checkpoint_dir", str(nvlabs_fixture), "--out", str(tmp_path / "x"), "--config", "ade20k"]) == 2
    err = capsys.readouterr().err
    assert f"{nvlabs_fixture / 'opt.txt'} not found" in err and "--opt" in err and len(err.splitlines()) == 1
    assert main(["--checkpoint_dir", str(nvlabs_fixture), "--opt", str(tmp_path / "missing.txt"),
                 "--out", str(tmp_path / "x")]) == 2
    assert f"--opt {tmp_path / 'missing.txt'}: no such file" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def _write_dataset(root, count=2, size=64, label_nc=5):
    """A custom-layout dataset (labels, images, 16-bit instance maps) that fits the fixture's options."""
    from PIL import Image

    for i in range(count):
        y, x = np.mgrid[:size, :size]
        label = ((x // 16 + y // 16 + i) % label_nc).astype(np.uint8)
        for folder, array in (("labels", label), ("images", np.stack([label * 50, 255 - label * 40, x * 3 % 256], -1)),
                              ("instances", (label.astype(np.uint16) * 1000 + x // 32).astype(np.uint16))):
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array.astype(np.uint8) if folder == "images" else array).save(root / folder / f"{i}.png")
    return [f"data.{name}_dir={root / folder}" for name, folder in
            (("label", "labels"), ("image", "images"), ("instance", "instances"))]


def test_an_imported_checkpoint_fine_tunes_through_the_documented_command(nvlabs_fixture, tmp_path, monkeypatch):
    """Import, then `python train.py --config <run>/config.yaml ...` (its main, in this process) for one step:
    the step starts from the imported G (same output) and D, and its checkpoint is step 1 after the import's 0."""
    import importlib.util

    import tensorflow as tf

    from spade_tf.shared import REPO_ROOT
    from spade_tf.training.trainer import Trainer

    run = tmp_path / "checkpoints" / "ade_finetune"
    assert main(["--checkpoint_dir", str(nvlabs_fixture), "--opt", str(nvlabs_fixture / "options.txt"),
                 "--out", str(run)]) == 0
    monkeypatch.chdir(tmp_path)  # a relative run folder, as the README's command
    data = _write_dataset(tmp_path / "data")
    _, d_imported, _ = import_checkpoint(nvlabs_fixture, config_from_opt(nvlabs_fixture / "options.txt"))
    inputs, outputs = np.load(nvlabs_fixture / "inputs.npz"), np.load(nvlabs_fixture / "outputs.npz")
    seen = {}
    run_step = Trainer.run_step

    def first_step_checked(trainer, iterator):
        if not seen:
            y = trainer.generator({"semantics": inputs["semantics"].transpose(0, 2, 3, 1), "z": inputs["z"]},
                                  training=False)
            seen["g_out"] = nchw(y)
            seen["d_same"] = all(np.array_equal(np.array(a), np.array(b)) for a, b in
                                 zip(trainer.discriminator.weights, d_imported.weights, strict=True))
            seen["step"] = int(trainer.step.numpy())
        return run_step(trainer, iterator)

    monkeypatch.setattr(Trainer, "run_step", first_step_checked)
    spec = importlib.util.spec_from_file_location("train_command", REPO_ROOT / "train.py")
    train_command = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_command)
    assert train_command.main(["--config", str(run.relative_to(tmp_path) / "config.yaml"), *data,
                               "train.max_steps=1"]) == 0
    np.testing.assert_allclose(seen["g_out"], outputs["g_out"], atol=TOLERANCE, rtol=0)
    assert seen["d_same"] and seen["step"] == 0
    assert sorted(p.name for p in run.glob("ckpt-*.index")) == ["ckpt-0.index", "ckpt-1.index"]
    assert tf.train.load_checkpoint(str(run / "ckpt-1")).get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 1


REFERENCE_COUNTS = [  # ../shared/reference/spade_reference.md, section 3
    ("ade20k", [], False, 96_492_483, 5_836_930, None),
    ("ade20k", [], True, 111_942_595, 5_836_930, 10_463_424),
    ("cityscapes", ["num_upsampling_layers=normal"], False, 93_048_003, 5_601_410, None),
    ("cityscapes", ["num_upsampling_layers=normal"], True, 126_400_707, 5_601_410, 10_463_424),
    ("cityscapes", [], False, 93_048_003, 5_601_410, None),
    ("cityscapes", [], True, 101_136_579, 5_601_410, 10_463_424),
]


@pytest.mark.parametrize("preset, overrides, vae, g_count, d_count, e_count", REFERENCE_COUNTS)
def test_parameter_counts_equal_the_reference(preset, overrides, vae, g_count, d_count, e_count):
    from spade_tf.models import build_discriminator, build_encoder

    cfg = load_config(preset, overrides + [f"use_vae={vae}"])
    count = lambda m: sum(int(np.prod(w.shape)) for w in m.trainable_weights)  # noqa: E731
    assert count(build_generator(cfg)) == g_count
    assert count(build_discriminator(cfg)) == d_count
    e = build_encoder(cfg)
    assert (e and count(e)) == e_count


def test_vae_with_another_z_dim_is_refused():
    with pytest.raises(ValueError, match="only z_dim=256 is supported"):
        build_generator(load_config("synthetic", ["use_vae=true", "z_dim=64"]))
