"""The benchmark runner (`python -m bench`) and the benchmark modules on tiny settings.

The runner is exercised with a fake benchmark package written to a temporary folder: every module
in a fresh process, failures recorded while the others still run, fractions of the matmul rate,
reference figures, targets, JSON and Markdown output and the README section.
"""

import json
import math
import os
import textwrap
import types

import numpy as np
import pytest

from bench import REFERENCE_JSON, machine, reference_figures, runner
from bench import __main__ as cli
from helpers import require_shared

FAKE_ONE = '''
import os

import numpy as np


def run(quick=False):
    ballast = np.ones(300 * 2**20 // 8)  # 300 MiB resident, so that the peak shows it
    ballast[::512] = 2.0
    return [
        {"name": "one/pid", "value": os.getpid(), "unit": "", "quick": quick},
        {"name": "one/speed", "value": 1.0, "unit": "images/s", "dtype": "float32", "gflops": 50.0,
         "matmul_gflops_alongside": 100.0, "target": {"min": 0.9, "of": "fraction"}},
        {"name": "one/ratio", "value": 1.01, "unit": "x", "target": {"max": 1.05, "note": "a note"}},
        {"name": "one/psnr", "value": 40.0, "unit": "dB", "target": {"min": 45}},
    ]
'''
FAKE_BROKEN = '''
def run(quick=False):
    raise RuntimeError("the fake benchmark broke")
'''
FAKE_TWO = '''
import os


def run(quick=False):
    return [{"name": "two/pid", "value": os.getpid(), "unit": ""}]
'''


def write_fake_package(root):
    """`root/fakebench/` with the modules bench_one, bench_broken and bench_two (and a non-benchmark)."""
    package = root / "fakebench"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("")
    for name, source in (("one", FAKE_ONE), ("broken", FAKE_BROKEN), ("two", FAKE_TWO)):
        (package / f"bench_{name}.py").write_text(textwrap.dedent(source))
    return package


def test_discover_and_select(tmp_path):
    assert runner.discover(write_fake_package(tmp_path)) == ["broken", "one", "two"]
    assert {"data", "inference", "serving"} <= set(runner.discover())
    assert runner.select(["a", "b", "c"], None) == ["a", "b", "c"]
    assert runner.select(["a", "b", "c"], "c, a") == ["c", "a"]
    with pytest.raises(ValueError, match="no benchmark named nope.*available: a, b"):
        runner.select(["a", "b"], "a,nope")
    with pytest.raises(ValueError, match="available"):
        runner.select(["a", "b"], ",")


@pytest.mark.parametrize("rows, problem", [
    ({"name": "x", "value": 1, "unit": ""}, "list of dicts"),
    ([{"name": "x", "unit": "s"}], "numeric 'value'"),
    ([{"name": "x", "value": True, "unit": "s"}], "numeric 'value'"),
    ([{"name": "x", "value": "1", "unit": "s"}], "numeric 'value'"),
    ([{"value": 1.0, "unit": "s"}], "str 'name'"),
    (["x"], "str 'name'"),
])
def test_check_rows_rejects_malformed_rows(rows, problem):
    with pytest.raises(ValueError, match=problem):
        runner.check_rows(rows, "bench.bench_fake")
    runner.check_rows([{"name": "x", "value": 1, "unit": "s", "more": [1]}], "bench.bench_fake")


@pytest.fixture(scope="module")
def fake_results(tmp_path_factory):
    """One run of the runner over the fake package (in fresh processes), shared by the tests below."""
    root = tmp_path_factory.mktemp("fake")
    write_fake_package(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))  # spawned children get the parent's sys.path
        logged = []
        results = runner.run_benchmarks(["one", "broken", "two"], quick=True, package="fakebench",
                                        matmul_repeats=2, log=logged.append)
    return results, logged


def test_runner_runs_each_module_in_a_fresh_process_and_survives_failures(fake_results):
    results, logged = fake_results
    one, broken, two = results["benchmarks"]
    assert [e["module"] for e in results["benchmarks"]] == ["one", "broken", "two"]
    pids = {one["rows"][0]["value"], two["rows"][0]["value"], os.getpid()}
    assert len(pids) == 3
    assert one["rows"][0]["quick"] is True
    assert broken["error"] == "RuntimeError: the fake benchmark broke" and broken["rows"] == []
    assert any("the fake benchmark broke" in text and "Traceback" in text for text in logged)
    assert one["error"] is None and two["error"] is None
    assert one["peak_rss_mib"] > two["peak_rss_mib"] + 250  # "two" allocates nothing: a fresh process's baseline
    assert one["seconds"] > 0


def test_runner_measures_the_machine_and_annotates_rows(fake_results):
    results, _ = fake_results
    rates = results["matmul_gflops"]
    for dtype in ("float32", "bfloat16"):
        before, after = results["matmul_runs"]["before"][dtype], results["matmul_runs"]["after"][dtype]
        assert before > 0 and after > 0 and rates[dtype] == pytest.approx((before + after) / 2)
    machine_info = results["machine"]
    assert machine_info["cores"] >= 1 and machine_info["tensorflow"][0].isdigit() and machine_info["cpu"]
    assert len(results["load_average"]["start"]) == 3

    speed, ratio, psnr = results["benchmarks"][0]["rows"][1:]
    assert speed["fraction"] == pytest.approx(50.0 / rates["float32"])
    assert speed["fraction_alongside"] == pytest.approx(0.5)
    assert speed["target_met"] is (speed["fraction"] >= 0.9)
    assert ratio["target_met"] is True and psnr["target_met"] is False
    assert not any(key.startswith("reference") for key in speed)  # recorded figures of another day: not divided


def test_results_json_and_markdown(fake_results, tmp_path):
    results, _ = fake_results
    markdown_path = runner.write_results(results, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == json.loads(json.dumps(results))
    markdown = markdown_path.read_text()
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| benchmark |"))
    header, lines = lines[start], lines[start:lines.index("", start)]
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "benchmark", "value", "unit", "fraction of the machine's matmul rate", "peak RSS (MiB)", "target"]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in lines if line.startswith("| one/") or line.startswith("| broken")}
    speed = rows["one/speed"]
    fraction = 50.0 / results["matmul_gflops"]["float32"]
    assert speed[1:3] == ["1.00", "images/s"]
    assert speed[3].startswith(f"{fraction:.2f} of fp32 (50.0 GFLOP/s); 0.50 of the rate measured alongside")
    assert speed[5] == ">= 0.9 of the matmul rate: " + ("met" if fraction >= 0.9 else "**not met**")
    assert rows["one/ratio"][5] == "<= 1.05 (a note): met"
    assert rows["one/psnr"][5] == ">= 45: **not met**"
    assert rows["broken"][1] == "failed: see below"
    assert "| broken |" in markdown and "failed: RuntimeError: the fake benchmark broke |" in markdown
    assert "spade_torch_cpu" not in markdown and "reference" not in markdown
    rate = runner.fmt(results["matmul_gflops"]["float32"])
    assert f"fp32 {rate} GFLOP/s" in markdown and "2048x2048" in markdown and results["machine"]["cpu"] in markdown


def test_fmt():
    assert [runner.fmt(v) for v in (None, 1234.5, 123.4, 12.345, 1.2345, 0.12345, 0.0012345, 3, 2.0, 0.0)] == [
        "", "1234", "123", "12.3", "1.23", "0.123", "0.00123", "3", "2.00", "0"]
    assert runner.fmt(math.inf) == "inf" and runner.fmt(math.nan) == "nan"


def test_readme_section_is_replaced_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\nbefore\n<!-- bench:start -->\nold table\n<!-- bench:end -->\nafter\n")
    runner.update_readme(readme, "| a | b |\n|---|---|\n")
    expected = "# title\n\nbefore\n<!-- bench:start -->\n| a | b |\n|---|---|\n<!-- bench:end -->\nafter\n"
    assert readme.read_text() == expected
    runner.update_readme(readme, "| a | b |\n|---|---|\n")
    assert readme.read_text() == expected
    for text in ("no markers\n", "<!-- bench:end -->\n<!-- bench:start -->\n", "<!-- bench:start -->\n"):
        readme.write_text(text)
        with pytest.raises(ValueError, match="<!-- bench:start --> and <!-- bench:end -->"):
            runner.update_readme(readme, "table")
        assert readme.read_text() == text


def test_cli_errors_and_rendering_an_earlier_run(fake_results, tmp_path, capsys):
    results, _ = fake_results
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:start -->\n<!-- bench:end -->\n")
    assert cli.main(["--only", "nope"], readme=readme) == 2
    assert "no benchmark named nope" in capsys.readouterr().err
    assert cli.main(["--from-results", "--out", str(tmp_path / "missing")], readme=readme) == 2
    assert "run `python -m bench` first" in capsys.readouterr().err
    no_markers = tmp_path / "plain.md"
    no_markers.write_text("intro\n")
    assert cli.main(["--from-results", "--update-readme", "--out", str(tmp_path)], readme=no_markers) == 2
    assert "no benchmark section" in capsys.readouterr().err

    runner.write_results(results, tmp_path / "out")
    (tmp_path / "out" / "results.md").unlink()
    code = cli.main(["--from-results", "--update-readme", "--out", str(tmp_path / "out")], readme=readme)
    assert code == 1  # the fake run has a failed module
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert readme.read_text() == f"intro\n<!-- bench:start -->\n{markdown}<!-- bench:end -->\n"


# --- bench.bench_train ----------------------------------------------------------------------------


def test_train_rows_hold_the_low_memory_case_and_both_peaks_against_the_target(monkeypatch):
    from bench import bench_train

    def fake_child(fn, setting, batch, precision, options):
        low = "train.low_memory=true" in options
        assert fn is bench_train.time_step
        return {"step_s": 2.0 if low else 1.0, "matmul_gflops_alongside": 100.0}, 4000.0 if low else 5000.0

    monkeypatch.setattr(bench_train, "run_in_child", fake_child)
    monkeypatch.setattr(bench_train, "lookups_vs_dense", lambda *a: {"name": "lookups", "value": 1.0, "unit": "x"})
    rows = {row["name"]: row for row in bench_train.run()}
    peaks = {name: row for name, row in rows.items() if name.endswith(("peak memory", "low_memory=true")) and row["unit"] == "MiB"}
    assert sorted(peaks) == ["train/ADE20K 256x256 bf16 batch 2 peak memory", "train/ADE20K 256x256 fp32 batch 2 peak memory",
                             "train/ADE20K 256x256 fp32 batch 2 peak memory, train.low_memory=true"]
    low = peaks["train/ADE20K 256x256 fp32 batch 2 peak memory, train.low_memory=true"]
    assert low["value"] == 4000.0 and low["target"]["max"] == bench_train.PEAK_TARGET_ADE20K_BATCH_2_MIB
    assert peaks["train/ADE20K 256x256 bf16 batch 2 peak memory"]["target"]["max"] == 5000.0  # below the default fp32
    step = rows["train/ADE20K 256x256 fp32 batch 2, train.low_memory=true"]
    assert step["value"] == 2.0 and "target" not in step  # the speed target is the default's


def test_memory_phases_breaks_a_step_down_on_a_tiny_network():
    from bench import bench_train

    tiny = ["model.ngf=4", "model.ndf=4", "data.load_size=64", "data.crop_size=64", "train.batch_size=1"]
    phases = bench_train.memory_phases("ade20k", batch=1, overrides=tiny)
    state = phases["state_mib"]
    assert state["G weights"] > 0 and state["VGG weights"] > 40  # VGG19 up to relu5_1: 12.9 M floats
    assert state["Adam slots (G and D)"] == pytest.approx(2 * (state["G weights"] + state["D weights"]), rel=0.1)
    assert sorted(phases["peak_above_resident_mib"]) == sorted([
        "VGG loss alone, forward and backward", "G step alone", "D step alone",
        "whole step (trainer.run_step), above the resident memory before it"])
    assert all(v >= 0 for v in phases["peak_above_resident_mib"].values())
    assert phases["process_peak_mib"] >= max(phases["resident_mib"].values())


# --- bench.before_after ---------------------------------------------------------------------------


def test_before_after_takes_turns_and_gives_the_median_of_the_pairs_ratios(monkeypatch):
    from bench import before_after

    calls, new_times = [], iter([1.0, 3.0, 1.5])

    def measure(tree, what, timeout):
        calls.append(tree)
        return {"seconds": 2.0 if tree == "old" else next(new_times), "peak_mib": 100.0}

    monkeypatch.setattr(before_after, "measure", measure)
    result = before_after.compare("old", "new", "inference", pairs=3, timeout=1, log=lambda line: None)
    assert calls == ["old", "new", "new", "old", "old", "new"]
    assert result["ratios"] == [0.5, 1.5, 0.75] and result["median_ratio"] == 0.75
    assert result["geometric_mean_ratio"] == pytest.approx((0.5 * 1.5 * 0.75) ** (1 / 3))


def test_before_after_geometric_mean_cancels_an_order_effect(monkeypatch):
    """The process that runs first in a pair is slowed by a factor; over an even number of pairs the
    geometric mean of the time ratios (and of the user-CPU ratios) is the true ratio, 0.9 here."""
    from bench import before_after

    in_pair = []

    def measure(tree, what, timeout):
        if len(in_pair) == 2:
            in_pair.clear()
        slow = 1.2 if not in_pair else 1.0
        in_pair.append(tree)
        seconds = (0.9 if tree == "new" else 1.0) * slow
        return {"seconds": seconds, "user_cpu_s": seconds, "peak_mib": 100.0}

    monkeypatch.setattr(before_after, "measure", measure)
    result = before_after.compare("old", "new", "train2", pairs=4, timeout=1, log=lambda line: None)
    assert result["median_ratio"] != pytest.approx(0.9)
    assert result["geometric_mean_ratio"] == pytest.approx(0.9)
    assert result["user_cpu_geometric_mean_ratio"] == pytest.approx(0.9)


# --- bench.machine --------------------------------------------------------------------------------


def _allocate_free_reset(mib):
    block = np.ones(mib * 2**20 // 8)
    block[::512] = 2.0
    before = machine.peak_rss_mib()
    del block
    reset = machine.reset_peak_rss()
    return before, reset, machine.peak_rss_mib()


def _fail():
    raise ValueError("failed in the child")


def test_run_in_child_reports_the_child_peak_and_reset_lowers_it():
    (before, reset, after), peak = machine.run_in_child(_allocate_free_reset, 300)
    assert before > 300 and peak >= after  # the child's own peak, with its 300 MiB block
    assert isinstance(reset, bool)
    with pytest.raises(ValueError, match="failed in the child"):
        machine.run_in_child(_fail)


def test_matmul_rate_counts_two_n_cubed_flops(monkeypatch):
    clock = iter([0.0, 1.0, 5.0, 6.5, 7.0, 7.5])  # timed calls of 1, 1.5 and 0.5 s: median 1 s
    monkeypatch.setattr(machine, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    assert machine.matmul_rate("float32", n=64, repeats=3) == pytest.approx(2 * 64**3 / 1e9)
    monkeypatch.undo()
    assert machine.matmul_rate("bfloat16", n=256, repeats=2) > 0


# --- bench.bench_inference on tiny settings -------------------------------------------------------


# Not helpers.TINY, on purpose: overrides of the benchmarks' own settings (the ADE20K and Cityscapes
# presets, which the bench loads itself), as narrow as their layer counts allow.
TINY = ("model.ngf=4", "data.crop_size=128")  # Cityscapes' 6 upsamplings need crop_size >= 128
TINY_ADE20K = ("model.ngf=4", "data.crop_size=64")


def test_flops_per_image_are_the_references():
    from bench import bench_inference

    require_shared(REFERENCE_JSON)
    for setting in bench_inference.SETTINGS.values():
        flops = reference_figures()["configs"][setting.reference]["setup"]["flops"]["G_forward_per_image"]
        assert setting.gflop_per_image == pytest.approx(flops / 1e9, rel=1e-12)
    cfg = bench_inference.setting_config("cityscapes")
    assert (cfg.image_size, cfg.semantic_nc, cfg.model.ngf, cfg.model.num_upsampling_layers) == (
        (256, 512), 36, 64, "more")
    cfg = bench_inference.setting_config("ade20k", precision="bfloat16")
    assert (cfg.image_size, cfg.semantic_nc, cfg.export.precision) == ((256, 256), 151, "bfloat16")


def test_random_layouts_are_blocky_and_valid():
    from bench.bench_inference import random_layouts, setting_config

    cfg = setting_config("cityscapes", TINY)
    labels, instances = random_layouts(cfg, 3)
    assert labels.shape == instances.shape == (3, 64, 128) and labels.dtype == np.uint8
    assert labels.max() < cfg.data.label_nc and len(np.unique(instances)) == 3 * 8 * 16
    assert (labels[:, ::8, ::8].repeat(8, 1).repeat(8, 2) == labels).all()
    assert random_layouts(setting_config("ade20k", TINY), 1)[1] is None


def test_psnr_known_answers():
    from bench.bench_inference import psnr

    a = np.zeros((4, 4))
    assert psnr(a, a + 0.02, peak=2.0) == pytest.approx(40.0)
    assert psnr(a, a + 2.55, peak=255.0) == pytest.approx(40.0)
    assert psnr(a, a, peak=1.0) == math.inf


def test_time_inference_of_a_folded_generator(tmp_path):
    import keras

    from bench import bench_inference

    path = str(tmp_path / "g.keras")
    bench_inference.fold_to_file("ade20k", path, TINY_ADE20K)
    assert not keras.saving.load_model(path).norm_G.startswith("spectral")  # folded
    result = bench_inference.time_inference("ade20k", path, "bfloat16", 2, 2, TINY_ADE20K)
    assert result["images_per_s"] == pytest.approx(2 / np.median(result["times_s"]))
    assert len(result["times_s"]) == 2 and result["matmul_gflops_alongside"] > 0
    assert result["conv_compute_dtype"] == "bfloat16"


def test_calibrate_batch_norm_sets_batch_statistics():
    import keras

    from bench.bench_inference import calibrate_batch_norm

    inputs = np.random.default_rng(0).normal(3.0, 2.0, (64, 5)).astype("float32")
    norm = keras.layers.BatchNormalization(momentum=0.9, center=False, scale=False)
    network = keras.Sequential([keras.Input((5,)), norm])
    calibrate_batch_norm(network, inputs)
    np.testing.assert_allclose(norm.moving_mean.numpy(), inputs.mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(), inputs.var(0), rtol=1e-4)
    assert norm.momentum == 0.9


@pytest.fixture(scope="module")
def inference_rows(tiny_run):
    """One quick run of bench.bench_inference on tiny networks (each measurement in a fresh process, as
    `python -m bench` runs it), shared by the tests below: the module end to end, and the figures of its
    bf16-accuracy and SavedModel-vs-Keras measurements (ADE20K is the only setting of a quick run)."""
    from bench import bench_inference

    return bench_inference.run(quick=True, overrides=TINY_ADE20K, trained_run=tiny_run)


def _row(rows, *words):
    [row] = [row for row in rows if all(word in row["name"] for word in words)]
    return row


@pytest.mark.slow
def test_bf16_accuracy_compares_two_precisions(inference_rows):
    # the module's bf16_accuracy("ade20k", 1, TINY_ADE20K), in its own process
    result = _row(inference_rows, "bf16 vs fp32 PSNR, ", "random gain-1 weights")
    assert 0 < result["max_abs_diff"] < 0.5  # bf16 really ran, and stays close
    assert 25 < result["psnr_db"] < math.inf and 25 < result["psnr_uint8_db"]
    assert result["fp32_output_std"] > 0.2  # gain-1 weights give images that span the range
    assert result["snr_db"] == pytest.approx(result["psnr_db"] - 20 * math.log10(2 / result["fp32_output_std"]))


@pytest.mark.slow
def test_bf16_accuracy_on_a_trained_model(inference_rows, tiny_run):
    # the module's bf16_accuracy_trained(tiny_run) (its default 16 held-out layouts), in its own process
    result = _row(inference_rows, "bf16 vs fp32 PSNR, trained model")
    assert str(tiny_run) in result["name"]
    assert result["image_size"] == [64, 64] and result["samples"] == 16
    assert 0 < result["max_abs_diff"] < 0.1  # bf16 really ran, and stays close
    assert 30 < result["psnr_db"] < math.inf and 30 < result["psnr_uint8_db"]
    assert result["fp32_output_std"] > 0.1  # a trained model's images are not flat


@pytest.mark.slow
def test_savedmodel_vs_keras_same_images(inference_rows):
    """bf16 here on Cityscapes (instance maps); fp32 from the module's run on ADE20K. (The fp32 export of a
    model with instance maps against its generator: tests/test_export.py, test_plain_model_runs_without_our_code.)"""
    from bench.bench_inference import savedmodel_vs_keras

    fp32 = _row(inference_rows, "SavedModel time / Keras time")
    bf16 = savedmodel_vs_keras("cityscapes", "bfloat16", 2, TINY)
    for result in (fp32, bf16):
        times = result["times_s"]
        assert len(times["savedmodel"]) == len(times["keras"]) == 2
        ratio = result["value"] if result is fp32 else result["ratio"]
        assert ratio == pytest.approx(np.median(np.divide(times["savedmodel"], times["keras"])))
    assert fp32["max_abs_diff_uint8"] <= 1  # in bf16 the two graphs round differently


@pytest.mark.slow
def test_inference_module_quick_on_tiny_networks(inference_rows):
    rows = inference_rows
    runner.check_rows(rows, "bench.bench_inference")
    speed = [row for row in rows if row["unit"] == "images/s" and row.get("dtype")]
    assert [row["dtype"] for row in speed] == ["float32", "bfloat16"]
    assert all(row["peak_rss_mib"] > 0 and "gflops" not in row for row in speed)  # no FLOPs for tiny nets
    assert [row["conv_compute_dtype"] for row in speed] == ["float32", "bfloat16"]
    assert all(row["value"] == pytest.approx(1 / np.median(row["times_s"])) for row in speed)  # batch 1
    assert sum(row["unit"] == "dB" for row in rows) == 5
    trained = [row for row in rows if row["unit"] == "dB" and "target" in row]
    assert len(trained) == 2 and all("trained model" in row["name"] for row in trained)
    assert any(row["unit"] == "x" and row["target"] == {"max": 1.05} for row in rows)


# --- bench.bench_serving on a tiny model ----------------------------------------------------------


@pytest.mark.slow
def test_serving_module_quick_on_a_tiny_model():
    from bench import bench_serving

    # no warm-up records in the export: the server does not replay them at start (the latency and throughput
    # measurements make their own warm-up calls)
    rows = {row["name"].split(" (")[0]: row
            for row in bench_serving.run(quick=True, overrides=("model.ngf=4", "export.warmup_requests=0"))}
    runner.check_rows(list(rows.values()), "bench.bench_serving")
    assert rows["serving/gRPC latency, embedded server, batch 1"]["max_abs_diff_uint8_vs_in_process"] == 0
    times = rows["serving/gRPC latency, embedded server, batch 1"]["times_s"]
    assert len(times["grpc"]) == len(times["in_process"]) == 10
    assert rows["serving/gRPC latency / in-process latency, batch 1"]["value"] == pytest.approx(
        np.median(np.divide(times["grpc"], times["in_process"])))
    assert rows["serving/gRPC latency, embedded server, batch 1"]["value"] == pytest.approx(
        1000 * np.median(times["grpc"]))
    throughput = [rows[f"serving/throughput, {n} concurrent client{'s' if n > 1 else ''}"] for n in (1, 4, 8)]
    assert all(row["value"] > 0 and row["requests_per_round"] == 16 and len(row["images_per_s_by_round"]) == 1
               for row in throughput)
    scaling = next(row for name, row in rows.items() if name.startswith("serving/throughput ratio"))
    assert scaling["value"] == pytest.approx(min(throughput[1]["value"] / throughput[0]["value"],
                                                 throughput[2]["value"] / throughput[1]["value"]))
    assert sum(scaling["server_batch_sizes"].values()) > 0
    assert rows["serving/server process peak RSS"]["value"] > 100


# --- bench.bench_regions ----------------------------------------------------------------------------


def test_multiply_add_count_is_the_references_and_shares_follow_the_5x5_rule():
    from bench import bench_inference, bench_regions

    for key, setting in bench_inference.SETTINGS.items():
        cfg = bench_inference.setting_config(key)
        _, _, n = bench_regions.spade_layers(cfg)
        everywhere = {2**k: 1.0 for k in range(n + 1)}
        dense, regions = bench_regions.multiply_adds(cfg, everywhere)
        assert dense == pytest.approx(setting.gflop_per_image / 2, rel=1e-9)
        assert dense * 0.7 < regions < dense  # all boundary: only mlp_shared's multiply-adds go, where they outweigh the table
        _, inside = bench_regions.multiply_adds(cfg, {2**k: 0.0 for k in range(n + 1)})
        assert inside < dense / 2  # mlp_shared and gamma/beta gone: the residual path and tables remain
    labels = np.zeros((1, 16, 16), np.uint8)
    labels[0, :, 8:] = 1
    assert bench_regions.boundary_share(labels, None, 1) == pytest.approx(1 - 12 * 8 / 256)
    instances = np.zeros((1, 16, 16), np.int32)
    instances[0, 8:] = 1  # an instance edge across the middle rows
    assert bench_regions.boundary_share(labels, instances, 1) > bench_regions.boundary_share(labels, None, 1)
    assert bench_regions.boundary_share(labels, None, 4) == 1.0  # 4x4: no 5x5 window fits
    # one class: a boundary window is set by the distances to the borders, 0, 1 or more on each axis
    # (rows 0, 1, 2..13, 14, 15 times the same columns), less the interior: 24 distinct windows
    assert bench_regions.distinct_windows(np.zeros((1, 16, 16), np.uint8), None, 1) == 24
    assert bench_regions.distinct_windows(labels, None, 1) < (1 - 12 * 8 / 256) * 256
    cfg = bench_inference.setting_config("ade20k")
    shares = {2**k: 0.5 for k in range(6)}
    per_pixel = {f: 0.5 * 256 * 256 / f**2 for f in shares}
    assert bench_regions.multiply_adds(cfg, shares, windows=per_pixel) == bench_regions.multiply_adds(cfg, shares)


def test_calibration_times_both_paths_of_one_layer_and_counts_its_pixels():
    from bench import bench_regions

    row = bench_regions.time_layer(36, 16, 8, "landscapes", "float32", repeats=1)
    assert row["dense"] > 0 and row["regions"] > 0
    assert row["pixels"] == 256 and 0 < row["mixed"] <= row["boundary"] < 256 and row["taps"] == 18  # instance edges


def test_lost_time_counts_the_wrong_picks_once_per_layer_they_stand_for():
    from bench import bench_regions

    samples = [{"dense_mac": 100.0, "region_mac": 50.0, "moved": 0.0, "dense": 1.0, "regions": 0.5, "layers": 2},
               {"dense_mac": 100.0, "region_mac": 90.0, "moved": 1.0, "dense": 1.0, "regions": 1.25, "layers": 3}]
    assert bench_regions.lost_time(samples, 1.0, 20.0, 0.0) == 0.0  # regions for the first, dense for the second
    assert bench_regions.lost_time(samples, 1.0, 0.0, 0.0) == pytest.approx(3 * 0.25)  # regions for both
    assert bench_regions.lost_time(samples, 3.0, 0.0, 0.0) == pytest.approx(2 * 0.5)  # dense for both
    assert bench_regions._layers_at(151)[256, 128] == 2  # norm_0 and norm_s of the last ADE20K block


@pytest.mark.slow
def test_regions_module_quick_on_a_tiny_network():
    from bench import bench_regions

    rows = bench_regions.run(quick=True, overrides=("model.ngf=4", "data.crop_size=64"), kinds=("landscapes",))
    runner.check_rows(rows, "bench.bench_regions")
    speed = [row for row in rows if "dense_images_per_s" in row]
    assert len(speed) == 1 and speed[0]["value"] == pytest.approx(
        speed[0]["regions_images_per_s"] / speed[0]["dense_images_per_s"])
    assert speed[0]["pair_ratios"] == [round(speed[0]["value"], 3)]  # --quick: one pair of processes
    assert speed[0]["max_abs_diff_corner"] <= 1e-5
    share = next(row for row in rows if "boundary share" in row["name"])
    assert list(share["by_resolution"]) == ["64x64", "32x32", "16x16", "8x8", "4x4", "2x2"]
