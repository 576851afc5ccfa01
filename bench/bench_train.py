"""Times one SPADE training iteration (G step + D step, VGG loss on) at the reference's settings.

Cases: ADE20K 256x256 (151 label channels, no instance maps) and Cityscapes 256x512 (35 labels +
instance edges, num_upsampling_layers normal, as the reference measurement), ngf 64, batch 1 and
2, float32 and mixed bfloat16, VGG19 with random weights (the step's cost does not depend on them).
Each case runs in a fresh child process: 1 warm-up step (tracing), then the median of 3 steps, and
the child's peak RSS. Achieved GFLOP/s count the reference's work for the same step (PyTorch
FlopCounterMode on NVlabs/SPADE, shared/reference/spade_torch_cpu.json: 1,687.6 GFLOP for an
ADE20K batch-1 iteration, 2,833.1 for Cityscapes; batch 2 is twice that), whatever our own step
computes, and are given as a fraction of the machine's matrix-multiply rate (2048x2048
tf.linalg.matmul, fp32 and bf16) measured in the same child just before and after the timed steps
(the machine is shared: a rate measured minutes apart can differ by 2x).

    python bench/bench_train.py [--quick] [--json out.json]
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
REFERENCE_GFLOP = {"ade20k": 1687.617667072, "cityscapes": 2833.137483776}  # batch 1, fwd + bwd, G + D + VGG
REFERENCE_SECONDS = {"ade20k": 13.85}  # batch 1, same machine type (shared/reference/cpu_performance.md)
REFERENCE_PEAK_MIB = {("ade20k", 1): 3917.4, ("ade20k", 2): 5282.8}  # spade_torch_cpu.json
CASES = [(d, b, p) for d in ("ade20k", "cityscapes") for b in (1, 2) for p in ("fp32", "bf16")]
TIMED_STEPS = 3


def _case_config(dataset, batch, precision):
    from spade_tf.config import load_config

    return load_config(dataset, [  # the presets: ADE20K 256x256; Cityscapes 512 wide, aspect 2
        "model.ngf=64", "model.ndf=64", "model.num_upsampling_layers=normal",
        f"train.batch_size={batch}", "train.distribute=none",
        "train.vgg_weights=random", "train.no_vgg_loss=false", "train.steps_per_epoch=1",
        f"train.mixed_precision={'on' if precision == 'bf16' else 'off'!r}",
    ])


def _time_case(dataset, batch, precision) -> dict:
    """Runs in the child: builds the trainer, times steps on random data."""
    import resource

    import tensorflow as tf

    from spade_tf.training.trainer import Trainer

    cfg = _case_config(dataset, batch, precision)
    trainer = Trainer(cfg, steps_per_epoch=1)
    h, w = cfg.image_size
    labels = tf.random.stateless_uniform([batch, h // 16, w // 16], [1, 2], 0, cfg.data.label_nc, tf.int32)
    sample = {
        "label": tf.image.resize(labels[..., None], [h, w], "nearest")[..., 0],
        "image": tf.random.stateless_uniform([batch, h, w, 3], [3, 4], -1.0, 1.0),
    }
    if not cfg.data.no_instance:
        sample["instance"] = sample["label"] * 1000
    dataset_ = tf.data.Dataset.from_tensors(sample).repeat()
    iterator = iter(trainer.strategy.experimental_distribute_dataset(dataset_))
    start = time.perf_counter()
    trainer.run_step(iterator)
    first = time.perf_counter() - start
    first_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    before = _matmul_rates()
    times = []
    for _ in range(TIMED_STEPS):
        start = time.perf_counter()
        logs = trainer.run_step(iterator)
        times.append(time.perf_counter() - start)
    after = _matmul_rates()
    return {
        "matmul_gflop_per_s": {k: round((before[k] + after[k]) / 2, 1) for k in before},
        "matmul_before_after": {k: [round(before[k], 1), round(after[k], 1)] for k in before},
        "first_step_s": round(first, 2),
        "times_s": [round(t, 3) for t in times],
        "step_s": statistics.median(times),
        "losses": {k: round(v, 4) for k, v in logs.items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_after_first_step_mib": round(first_peak, 1),
        "xla": trainer.jit,
    }


def _matmul_rates(n=2048, repeats=7) -> dict:
    """GFLOP/s of an n x n matmul in fp32 and bf16 (median of `repeats` after a warm-up)."""
    import tensorflow as tf

    rates = {}
    for name, dtype in (("fp32", tf.float32), ("bf16", tf.bfloat16)):
        a = tf.cast(tf.random.stateless_normal([n, n], [1, 2]), dtype)
        b = tf.cast(tf.random.stateless_normal([n, n], [3, 4]), dtype)
        matmul = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.linalg.matmul(x, y), tf.float32)))
        matmul(a, b).numpy()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            matmul(a, b).numpy()
            times.append(time.perf_counter() - start)
        rates[name] = 2 * n**3 / statistics.median(times) / 1e9
    return rates


def _child(args) -> dict:
    """Runs `bench_train.py --child ...` in a fresh process and returns its JSON result."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], capture_output=True,
                            text=True, env=env, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark child {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(quick=False) -> list:
    """One dict per case (the smallest case only with `quick`), each with the matmul rates around it."""
    results = []
    for dataset, batch, precision in CASES[:1] if quick else CASES:
        print(f"timing {dataset} batch {batch} {precision} ...", file=sys.stderr, flush=True)
        timing = _child([dataset, batch, precision])
        gflop = REFERENCE_GFLOP[dataset] * batch
        achieved = gflop / timing["step_s"]
        rates = timing["matmul_gflop_per_s"]
        case = f"{dataset} {batch}x{'256x256' if dataset == 'ade20k' else '256x512'} {precision}"
        results.append({
            "name": f"train/one G+D step (VGG on), {case}", "value": round(timing["step_s"], 3), "unit": "s/step",
            "dtype": "float32" if precision == "fp32" else "bfloat16",
            "gflops": round(gflop / timing["step_s"], 1),
            "matmul_gflops_alongside": timing["matmul_gflop_per_s"][precision],
            "reference": f"configs.{dataset}.train.bs{batch}.median_s",
            "reference_peak_rss": f"configs.{dataset}.train.bs{batch}.peak_rss_mib",
            "case": case,
            "dataset": dataset, "batch": batch, "precision": precision, **timing,
            "images_per_s": round(batch / timing["step_s"], 4),
            "reference_gflop": round(gflop, 1),
            "gflop_per_s": round(achieved, 1),
            "fraction_of_fp32_matmul": round(achieved / rates["fp32"], 3),
            "fraction_of_bf16_matmul": round(achieved / rates["bf16"], 3),
            "reference_peak_mib": REFERENCE_PEAK_MIB.get((dataset, batch)),
        })
    by_case = {(r["dataset"], r["batch"], r["precision"]): r for r in results}
    for r in results:
        fp32 = by_case.get((r["dataset"], r["batch"], "fp32"))
        if r["precision"] == "bf16" and fp32:
            r["speedup_vs_fp32"] = round(fp32["step_s"] / r["step_s"], 2)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the smallest case")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        dataset, batch, precision = args.child
        print(json.dumps(_time_case(dataset, int(batch), precision)))
        return
    results = run(quick=args.quick)
    for r in results:
        extra = f", {r['speedup_vs_fp32']}x fp32" if "speedup_vs_fp32" in r else ""
        print(f"{r['case']:32s} {r['step_s']:7.2f} s/step  {r['gflop_per_s']:6.1f} GFLOP/s  "
              f"{r['fraction_of_fp32_matmul']:.2f} of fp32 matmul ({r['fraction_of_bf16_matmul']:.2f} of bf16)"
              f"{extra}  peak {r['peak_rss_mib']:.0f} MiB  first step {r['first_step_s']} s  "
              f"(matmul fp32 {r['matmul_gflop_per_s']['fp32']}, bf16 {r['matmul_gflop_per_s']['bf16']} GFLOP/s)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
