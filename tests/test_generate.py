"""The synthesis command (`spade_tf.evaluation.generate`, also `python -m spade_tf.generate`) and its
modules (sources, layouts, synthesis) on tiny freshly built networks (no training): the built-in data, folders of
label PNGs (class ids and palette colours), resuming, VAE seeds and styles, bad files, a
Cityscapes-layout fixture, an export and an NVlabs checkpoint; its options as `eval.*` config
overrides, and the flags they replaced."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from spade_tf.evaluation import generate
from spade_tf.data import build_dataset
from spade_tf.data.classes import colorize, decolorize
from spade_tf.evaluation import synthesis
from spade_tf.evaluation.layouts import dataset_layouts, label_folder, palette, read_label_png
from spade_tf.evaluation.sources import load_run
from spade_tf.evaluation.synthesis import variants
from spade_tf.models import build_encoder, build_generator
from spade_tf.semantics import semantic_input
from spade_tf.training.checkpoints import restore_networks, save_imported
from spade_tf.training.visuals import to_uint8

from helpers import require_shared, tiny_config
from helpers.standin_graph import write_standin_graph

# helpers.TINY, and on purpose: ngf 4 at 32x32, 4 layouts, and gain 1 instead of 0.02 so that an
# untrained generator's images visibly vary.
GENERATE = ["model.ngf=4", "data.crop_size=32", "data.synthetic_size=4", "model.init_variance=1.0", "name=tiny"]
OLD = 1_000_000_000_000_000_000  # an mtime (ns) in 2001: files that keep it were not rewritten


def make_run(directory, preset="synthetic", overrides=()):
    cfg = tiny_config(*GENERATE, *overrides, preset=preset)
    save_imported(directory, cfg, build_generator(cfg, seed=3), encoder=build_encoder(cfg, seed=4))
    return directory


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "tiny")


@pytest.fixture(scope="module")
def model(run_dir):
    return load_run(run_dir)


def read(path):
    with Image.open(path) as im:
        return np.asarray(im)


def synthesize(model, out, labels=None, how_many=0, columns=None, batch_size=2):
    if labels:
        total, layouts = label_folder(labels, model.cfg, how_many)
    else:
        total, layouts = dataset_layouts(model.cfg, "test", batch_size, how_many)
    columns = columns or variants(model)
    return synthesis.synthesize(model, layouts, total, out, columns, batch_size, progress=False)


def age(files):
    for f in files:
        os.utime(f, ns=(OLD, OLD))


def test_builtin_data_images_page_and_scores(run_dir, tmp_path, capsys):
    graph = write_standin_graph(tmp_path / "standin.pb")
    out = tmp_path / "out"
    argv = ["--run_dir", str(run_dir), "--out", str(out), "eval.batch_size=3", "--evaluate",
            "eval.extractor=inception-2015", f"eval.inception_graph={graph}"]
    assert generate.main(argv) == 0
    stems = [f"val_{i:05d}" for i in range(4)]
    for kind in ("synthesized", "input_label", "real"):
        assert sorted(p.stem for p in (out / "images" / kind).iterdir()) == stems

    cfg, generator, _ = restore_networks(run_dir)
    batch = next(iter(build_dataset(cfg, "test", batch_size=4)))  # the val split, in order
    colours = palette(cfg)
    semantics = semantic_input(
        batch["label"], batch["instance"], label_nc=8, contain_dontcare_label=False, use_instance=True
    )
    expected = to_uint8(generator(semantics, training=False))  # the unfolded Keras generator, eagerly
    for i, stem in enumerate(stems):
        np.testing.assert_array_equal(read(out / "images/real" / f"{stem}.png"), to_uint8(batch["image"][i]))
        layout = decolorize(read(out / "images/input_label" / f"{stem}.png"), colours)
        np.testing.assert_array_equal(layout, batch["label"][i])
        synthesized = read(out / "images/synthesized" / f"{stem}.png").astype(int)
        assert synthesized.shape == (32, 32, 3)
        assert np.abs(synthesized - expected[i]).max() <= 1  # folded spectral norm, graph mode: same image
    assert np.ptp(expected) > 50

    page = (out / "index.html").read_text()
    for stem in stems:
        row = page[page.index(f"<td>{stem}</td>"):].split("</tr>")[0]
        srcs = [f"images/{kind}/{stem}.png" for kind in ("input_label", "synthesized", "real")]
        assert [row.index(f'src="{src}"') for src in srcs] == sorted(row.index(f'src="{src}"') for src in srcs)

    scores = json.loads((out / "scores.json").read_text())
    assert scores["segmenter"] == "builtin" and 0.0 <= scores["miou"] <= 1.0 and scores["pixels"] == 4 * 32 * 32
    assert scores["extractor"] == "inception-2015" and scores["fid"] > 0 and scores["num_fake"] == 4
    assert "4 images written" in capsys.readouterr().out


def test_resumes_after_an_interruption(model, tmp_path):
    out = tmp_path / "out"
    first = synthesize(model, out, how_many=2)  # as if stopped after two layouts
    assert (first["layouts"], first["written"], first["skipped"]) == (2, 2, 0)
    done = sorted(out.rglob("*.png"))
    assert len(done) == 6
    age(done)

    second = synthesize(model, out)
    assert (second["layouts"], second["written"], second["skipped"]) == (4, 2, 2)
    assert all(f.stat().st_mtime_ns == OLD for f in done)
    assert len(list(out.rglob("*.png"))) == 12

    # Killed while writing val_00003: its image is missing and a partial temporary file is left.
    (out / "images/synthesized/val_00003.png").unlink()
    (out / "images/synthesized/val_00003.tmp.png").write_bytes(b"\x89PNG partial")
    age(out.rglob("*.png"))
    third = synthesize(model, out)
    assert (third["written"], third["skipped"]) == (1, 3)
    rewritten = [f for f in out.rglob("*.png") if f.stat().st_mtime_ns != OLD]
    assert rewritten == [out / "images/synthesized/val_00003.png"]
    assert "val_00003" in (out / "index.html").read_text()


def test_label_folder_of_class_ids_and_palette_colours(model, tmp_path):
    y, x = np.mgrid[:32, :32]
    layout = ((x // 8 + y // 8) % 8).astype(np.uint8)
    folder = tmp_path / "labels"
    folder.mkdir()
    Image.fromarray(layout).save(folder / "ids.png")
    Image.fromarray(colorize(layout, palette(model.cfg))).save(folder / "colours.png")
    Image.fromarray(np.kron(layout, np.ones((2, 2), np.uint8))).save(folder / "large.png")  # 64x64: resized to 32x32
    (folder / "notes.txt").write_text("not a layout")
    result = synthesize(model, tmp_path / "out", labels=folder)
    assert result["written"] == 3 and result["real"] == []
    images = {name: read(tmp_path / "out/images/synthesized" / f"{name}.png") for name in ("ids", "colours", "large")}
    assert images["ids"].shape == (32, 32, 3)
    np.testing.assert_array_equal(images["colours"], images["ids"])
    np.testing.assert_array_equal(images["large"], images["ids"])
    colours = colorize(layout, palette(model.cfg))
    np.testing.assert_array_equal(read(tmp_path / "out/images/input_label/ids.png"), colours)
    assert "<th>real</th>" not in (tmp_path / "out/index.html").read_text()


def test_bad_label_files_are_named(run_dir, model, tmp_path, capsys):
    folder = tmp_path / "labels"
    folder.mkdir()
    Image.fromarray(np.full((32, 32), 200, np.uint8)).save(folder / "outside.png")
    assert generate.main(["--run_dir", str(run_dir), "--labels", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "outside.png" in err and "[200]" in err and "0..7" in err

    colours = np.zeros((32, 32, 3), np.uint8)
    colours[:] = (1, 2, 3)
    Image.fromarray(colours).save(tmp_path / "unknown_colour.png")
    with pytest.raises(ValueError, match=r"unknown_colour.png.*\(1, 2, 3\)"):
        read_label_png(tmp_path / "unknown_colour.png", model.cfg)
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match="garbage.png is not a readable image"):
        read_label_png(tmp_path / "garbage.png", model.cfg)
    Image.fromarray(np.zeros((32, 32, 2), np.uint8), mode="LA").save(tmp_path / "grey_alpha.png")
    with pytest.raises(ValueError, match="grey_alpha.png: it is a LA-mode image"):
        read_label_png(tmp_path / "grey_alpha.png", model.cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no label PNGs"):
        label_folder(tmp_path / "empty", model.cfg)
    with pytest.raises(ValueError, match="not a VAE model"):
        variants(model, seeds=[0, 1])


def record_batches(monkeypatch):
    """Makes the models the command loads from run folders record the batch size of every generator call."""
    batches, load = [], generate.load_run

    def recording(*args, **kwargs):
        model = load(*args, **kwargs)
        with_seed = model.signatures["with_seed"]

        def counted(**inputs):
            batches.append(len(inputs["label_map"]))
            return with_seed(**inputs)

        model.signatures["with_seed"] = counted
        return model

    monkeypatch.setattr(generate, "load_run", recording)
    return batches


def test_eval_options_come_from_the_runs_config_then_the_command_line(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path / "run", overrides=["eval.batch_size=3", "eval.how_many=4"])
    labels = tmp_path / "labels"
    labels.mkdir()
    for i in range(5):
        Image.fromarray(np.random.default_rng(i).integers(0, 8, (32, 32), dtype=np.uint8)).save(labels / f"l{i}.png")
    batches = record_batches(monkeypatch)
    argv = ["--run_dir", str(run), "--labels", str(labels), "--evaluate"]
    assert generate.main(argv + ["--out", str(tmp_path / "a")]) == 0
    assert batches == [3, 1]  # the run's config.yaml: the first 4 layouts, 3 per generator call
    assert json.loads((tmp_path / "a/scores.json").read_text())["segmenter"] == "builtin"  # eval.segmenter=auto

    batches.clear()
    assert generate.main(argv + ["--out", str(tmp_path / "b"), "eval.batch_size=2", "eval.how_many=0",
                                 "eval.segmenter=none"]) == 0
    assert batches == [2, 2, 1]
    scores = json.loads((tmp_path / "b/scores.json").read_text())
    assert scores["images"] == 5 and "miou" not in scores
    assert "no segmentation scores: eval.segmenter is 'none'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, message",
    [
        ("eval.extractor=vgg", "'eval.extractor' must be one of none, inception-2015, keras-inceptionv3; got 'vgg'"),
        ("eval.split=training", "'eval.split' must be one of train, val, test; got 'training'"),
        ("eval.batch_size=0", "'eval.batch_size' must be >= 1; got 0"),
        ("eval.seeds=[1,1]", "'eval.seeds' must be distinct non-negative integers"),
        ("eval.seeds=0,1", "'eval.seeds' must be a list"),
    ],
)
def test_bad_eval_options_are_named(run_dir, tmp_path, override, message, capsys):
    assert generate.main(["--run_dir", str(run_dir), "--out", str(tmp_path), override]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "images").exists()


@pytest.mark.parametrize(
    "flag, value, override",
    [
        ("--batch_size", "4", "eval.batch_size=4"),
        ("--precision", "bfloat16", "export.precision=bfloat16"),
        ("--split", "val", "eval.split=val"),
        ("--seeds", "0,1", "eval.seeds=[0,1]"),
        ("--segmenter", "builtin", "eval.segmenter=builtin"),
        ("--weights", "w.h5", "eval.keras_inception_weights=w.h5"),
    ],
)
def test_replaced_flags_name_their_override(flag, value, override, capsys):
    with pytest.raises(SystemExit) as exit_:
        generate.main(["--run_dir", "anywhere", flag, value])
    assert exit_.value.code == 2
    assert f"{flag} is now a config override: write {override}" in capsys.readouterr().err


@pytest.mark.slow
def test_vae_seeds_and_style(tmp_path):
    vae = load_run(make_run(tmp_path / "vae", overrides=["model.use_vae=true"]))
    out = tmp_path / "out"
    result = synthesize(vae, out, how_many=2, columns=variants(vae, seeds=[0, 1]))
    assert result["written"] == 4
    seed0, seed1 = (read(out / f"images/synthesized/val_00000_seed{k}.png").astype(int) for k in (0, 1))
    assert np.abs(seed0 - seed1).mean() > 1.0

    age(out.rglob("*.png"))
    more = synthesize(vae, out, how_many=2, columns=variants(vae, seeds=[0, 1, 2]))
    assert (more["written"], more["skipped"]) == (2, 4)
    assert sorted(f.name for f in out.rglob("*.png") if f.stat().st_mtime_ns != OLD) == [
        "val_00000_seed2.png", "val_00001_seed2.png"]

    photo = tmp_path / "sunset.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photo)
    (style,) = variants(vae, style=photo)
    assert style.suffix == "_style_sunset" and style.z.shape == (256,)
    synthesize(vae, out, how_many=1, columns=[style])
    styled = read(out / "images/synthesized/val_00000_style_sunset.png").astype(int)
    assert np.abs(styled - seed0).mean() > 1.0
    with pytest.raises(ValueError, match="either eval.seeds or --style"):
        variants(vae, seeds=[0], style=photo)


def write_cityscapes(root, n=2):
    """A Cityscapes val split: 32x64 labelIds (0..33), 16-bit instanceIds and photos."""
    y, x = np.mgrid[:32, :64]
    for i in range(n):
        city = ("aachen", "bochum")[i % 2]
        key = f"{city}_{i:06d}_000019"
        label = ((x // 8 + 3 * (y // 8) + i) % 34).astype(np.uint8)
        ids = label.astype(int)
        photo = np.stack([ids * 7, 255 - ids * 7, ids * 31 % 256], axis=-1).astype(np.uint8)
        for folder, name, array in (
            ("gtFine", "gtFine_labelIds", label),
            ("gtFine", "gtFine_instanceIds", (label.astype(np.uint16) * 1000 + x // 16).astype(np.uint16)),
            ("leftImg8bit", "leftImg8bit", photo),
        ):
            path = root / folder / "val" / city / f"{key}_{name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    return root


@pytest.mark.slow
def test_cityscapes_layout_dataset(tmp_path):
    root = write_cityscapes(tmp_path / "cityscapes")
    run = make_run(tmp_path / "city", "cityscapes", ["data.crop_size=64", "model.num_upsampling_layers=normal"])
    out = tmp_path / "out"
    argv = ["--run_dir", str(run), "--config", "cityscapes", f"data.dataroot={root}", "eval.split=val",
            "--out", str(out)]
    assert generate.main(argv) == 0
    stems = ["aachen_000000_000019_gtFine_labelIds", "bochum_000001_000019_gtFine_labelIds"]
    for stem in stems:
        assert read(out / "images/synthesized" / f"{stem}.png").shape == (32, 64, 3)
        photo = root / "leftImg8bit/val" / stem.split("_")[0] / stem.replace("gtFine_labelIds", "leftImg8bit.png")
        np.testing.assert_array_equal(read(out / "images/real" / f"{stem}.png"), read(photo))
    assert all(stem in (out / "index.html").read_text() for stem in stems)
    assert generate.main(argv[:2] + ["--config", "ade20k", f"data.dataroot={root}", "--out", str(out)]) == 2


@pytest.mark.slow
def test_saved_model_gives_the_run_folders_images(run_dir, model, tmp_path, capsys):
    from spade_tf.export import export_model

    cfg, generator, _ = restore_networks(run_dir)
    export_model(cfg, generator, export_dir=tmp_path / "exports")
    folder = tmp_path / "labels"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 8, (32, 32), dtype=np.uint8)).save(folder / f"l{i}.png")
    synthesize(model, tmp_path / "keras", labels=folder)
    argv = ["--saved_model", str(tmp_path / "exports"), "--labels", str(folder), "--out", str(tmp_path / "served")]
    assert generate.main(argv) == 0
    for i in range(3):
        served, keras_path = (read(tmp_path / f"{kind}/images/synthesized/l{i}.png") for kind in ("served", "keras"))
        np.testing.assert_array_equal(served, keras_path)
    for key, value in (("export.precision", "bfloat16"), ("model.ngf", "8")):  # the export's own
        assert generate.main(argv + [f"{key}={value}"]) == 2
        err = capsys.readouterr().err
        assert key in err and "an export's networks and precision are fixed" in err


@pytest.mark.slow
def test_nvlabs_checkpoint(tmp_path):
    fixture = require_shared("fixtures/nvlabs_spade")
    folder = tmp_path / "labels"
    folder.mkdir()
    Image.fromarray((np.arange(64)[None, :] // 13 * np.ones((64, 1))).astype(np.uint8)).save(folder / "stripes.png")
    out = tmp_path / "out"
    argv = ["--nvlabs_dir", str(fixture), "--opt", str(fixture / "options.txt"), "--labels", str(folder),
            "eval.seeds=[0,1]", "--out", str(out)]
    assert generate.main(argv) == 0
    seed0, seed1 = (read(out / f"images/synthesized/stripes_seed{k}.png").astype(int) for k in (0, 1))
    assert seed0.shape == (64, 64, 3) and np.abs(seed0 - seed1).mean() > 0.5
    assert pathlib.Path(out / "index.html").exists()


@pytest.mark.slow
def test_mixed_bfloat16_synthesis_is_close_to_float32(tmp_path):
    cfg = tiny_config(*GENERATE)
    generator = build_generator(cfg, seed=3)
    batch = next(iter(build_dataset(cfg, "test", batch_size=4)))
    semantics = semantic_input(
        batch["label"], batch["instance"], label_nc=8, contain_dontcare_label=False, use_instance=True
    )
    for _ in range(10):  # batch-norm statistics of real activations, as a trained model has
        generator(semantics, training=True)
    run = tmp_path / "calibrated"
    save_imported(run, cfg, generator)
    images = {}
    for precision in ("float32", "bfloat16"):
        model = load_run(run, overrides=[f"export.precision={precision}"])
        synthesize(model, tmp_path / precision, batch_size=4)
        images[precision] = np.stack([read(p) for p in sorted((tmp_path / precision / "images/synthesized").iterdir())])
    fp32, bf16 = (images[p].astype(float) for p in ("float32", "bfloat16"))
    assert fp32.std() > 10
    psnr = 10 * np.log10(255**2 / np.mean((fp32 - bf16) ** 2))
    assert 40 < psnr < 90  # bfloat16 computes differently, but close


def test_the_old_module_name_runs_the_command():
    """`python -m spade_tf.generate`, as the README and users call it, is the evaluation package's command."""
    import spade_tf.generate

    assert spade_tf.generate.main is generate.main
    result = subprocess.run([sys.executable, "-m", "spade_tf.generate", "--help"], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: python -m spade_tf.generate" in result.stdout and "--saved_model" in result.stdout
