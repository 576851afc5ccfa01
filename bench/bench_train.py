"""One SPADE training iteration (G step + D step, VGG loss on) at the reference's settings.

Settings: ADE20K 256x256 (151 semantic channels, no instance maps) and Cityscapes 256x512 (35
labels + instance edges, num_upsampling_layers normal, as the reference's measurement), ngf 64,
batch 1 and 2, float32 and mixed bfloat16; VGG19 with random weights (the step's cost does not
depend on them); `spade_tf.training.trainer.Trainer.run_step` on the default strategy, XLA as the
trainer chooses it (off on CPU). Each case runs in a fresh process: one warm-up step (tracing),
then the median of 3 steps, with the matmul rate of the case's dtype measured between the steps
(the machine is shared and its speed drifts). GFLOP/s count the reference's work for the same step
(PyTorch FlopCounterMode on NVlabs/SPADE, `spade_torch_cpu.json`: 1,687.6 GFLOP for an ADE20K
batch-1 iteration, 2,833.1 for Cityscapes, twice that at batch 2), whatever our own step computes.
Peak memory is the child's whole ru_maxrss (TensorFlow, weights, optimizer states, activations),
as the reference's.

Targets: fp32 >= 0.75 of the fp32 matmul rate; mixed bf16 >= 1.6x our own fp32 step; peak memory
at ADE20K batch 2 <= 0.9 x the reference's (5,348 MiB for NVlabs/SPADE in fp32, measured side by side
with spade-tf on 2026-12-02: at most 4,813 MiB), for fp32 and lower still for bf16. The training
command's allocator settings (`spade_tf.training.memory`) apply in every child, as in training; the
full run adds ADE20K fp32 batch 2 with `train.low_memory=true` (oneDNN's tensors from the system
allocator: lower peak, more page faults).

    python -m bench.bench_train [--quick]
    python -m bench.bench_train --phases     # where the ADE20K fp32 batch-2 peak goes (memory_phases)
"""

import argparse
import os
import resource
import statistics
import time

from bench.machine import matmul_timer, run_in_child

SETTINGS = {  # label, preset, key under "configs" in spade_torch_cpu.json, its train_iteration_bs1_fwd_bwd / 1e9
    "ade20k": ("ADE20K 256x256", "ade20k", "ade20k", 1687.617667072),
    "cityscapes": ("Cityscapes 256x512 normal", "cityscapes", "cityscapes", 2833.137483776),
}
PRECISIONS = {"float32": "fp32", "bfloat16": "bf16"}
TARGET_FP32_FRACTION = 0.75
TARGET_BF16_SPEEDUP = 1.6
PEAK_TARGET_ADE20K_BATCH_2_MIB = 4813  # 0.9 x 5,348 MiB, the reference side by side (2026-12-02)
TIMED_STEPS = 3
LOW_MEMORY = ", train.low_memory=true"


def setting_config(setting: str, batch: int, precision: str, overrides=()):
    from spade_tf.config import load_config

    return load_config(SETTINGS[setting][1], [
        "model.ngf=64", "model.ndf=64", "model.num_upsampling_layers=normal", f"train.batch_size={batch}",
        "train.distribute=none", "train.vgg_weights=random", "train.no_vgg_loss=false",
        f"train.mixed_precision={'on' if precision == 'bfloat16' else 'off'!r}",  # quoted: YAML reads on as true
        *overrides,
    ])


def time_step(setting: str, batch: int, precision: str, overrides=()) -> dict:
    """Builds the trainer for one case and times its training iteration on random data."""
    from spade_tf.training.memory import SYSTEM_ALLOCATOR, release_freed_memory

    cfg = setting_config(setting, batch, precision, overrides)
    release_freed_memory(cfg.train.low_memory)  # as the training command does, before TensorFlow allocates
    import tensorflow as tf

    from spade_tf.training.trainer import Trainer
    trainer = Trainer(cfg, steps_per_epoch=1)
    h, w = cfg.image_size
    blocks = tf.random.stateless_uniform([batch, max(h // 16, 1), max(w // 16, 1), 1], [1, 2], 0,
                                         cfg.data.label_nc, tf.int32)
    sample = {"label": tf.image.resize(blocks, [h, w], "nearest")[..., 0],
              "image": tf.random.stateless_uniform([batch, h, w, 3], [3, 4], -1.0, 1.0)}
    if not cfg.data.no_instance:
        sample["instance"] = sample["label"] * 1000
    data = tf.data.Dataset.from_tensors(sample).repeat()
    iterator = iter(trainer.strategy.experimental_distribute_dataset(data))
    matmul = matmul_timer(precision)
    start = time.perf_counter()
    trainer.run_step(iterator)
    first_step_s = time.perf_counter() - start
    times, rates, usage = [], [matmul(3)], []
    for _ in range(TIMED_STEPS):  # the matmul rate between the steps: the same conditions for both
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        losses = trainer.run_step(iterator)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_SELF)
        usage.append((after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt))
        rates.append(matmul(3))
    return {
        "step_s": statistics.median(times),
        "times_s": times,
        # CPU time and page faults of a step: the allocator's cost, steadier than wall time on a shared machine
        "user_cpu_s": statistics.median(u[0] for u in usage),
        "system_cpu_s": statistics.median(u[1] for u in usage),
        "page_faults": statistics.median(u[2] for u in usage),
        "onednn_system_allocator": os.environ.get(SYSTEM_ALLOCATOR) == "1",
        "first_step_s": first_step_s,
        "matmul_gflops_alongside": statistics.median(rates),
        "losses": losses,
        "xla": trainer.jit,
        "peak_rss_from": "process start",
    }


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _mib(variables) -> float:
    return sum(v.numpy().nbytes for v in variables) / 2**20


def memory_phases(setting: str = "ade20k", batch: int = 2, precision: str = "float32", overrides=()) -> dict:
    """Where the training step's peak resident memory goes, phase by phase, in this (fresh) process.

    State (exact sizes of the variables): G, D and VGG weights, Adam's two slots per weight, the EMA copy
    (when train.ema_decay > 0). Resident memory after building them, then the peak above that resident
    memory (VmHWM reset through /proc/self/clear_refs before each phase) of: the VGG loss alone (forward
    and backward for a fake batch), the G step alone (G + D + VGG forward and backward, Adam update), the
    D step alone (regenerated fake, D forward and backward, update), and the whole step as the trainer runs it.
    Each phase runs once before it is measured (tracing), and memory TensorFlow frees stays resident in
    the allocator's heap: so these peaks are what a phase adds on top of everything before it, and the
    resident memory before the last step holds the high-water of the step's activations.
    """
    from spade_tf.training.memory import release_freed_memory

    cfg = setting_config(setting, batch, precision, overrides)
    release_freed_memory(cfg.train.low_memory)
    import tensorflow as tf

    from bench.machine import peak_rss_mib, reset_peak_rss
    from spade_tf.training.trainer import Trainer

    phases = {"TensorFlow imported": _rss_mib()}
    trainer = Trainer(cfg, steps_per_epoch=1)
    model = trainer.model
    phases["networks and optimizers built (resident)"] = _rss_mib()
    state = {
        "G weights": _mib(trainer.generator.weights), "D weights": _mib(trainer.discriminator.weights),
        "VGG weights": _mib(model.vgg_loss.vgg.weights) if model.vgg_loss else 0.0,
        "Adam slots (G and D)": _mib(trainer.g_optimizer.variables + trainer.d_optimizer.variables),
        "EMA copy of G": _mib(trainer.ema_generator.weights) if trainer.ema_generator is not None else 0.0,
    }
    h, w = cfg.image_size
    label = tf.random.stateless_uniform([batch, h, w], [1, 2], 0, cfg.data.label_nc, tf.int32)
    sample = {"label": label, "image": tf.random.stateless_uniform([batch, h, w, 3], [3, 4], -1.0, 1.0)}
    if not cfg.data.no_instance:
        sample["instance"] = label * 1000
    semantics, real = model.semantics(sample), sample["image"]

    def vgg_only(fake, real):
        with tf.GradientTape() as tape:
            tape.watch(fake)
            loss = tf.reduce_sum(model.vgg_loss(fake, real))
        return tape.gradient(loss, fake)

    def g_only(semantics, real):
        return trainer._update(trainer.g_optimizer, model.generator_variables(), model.generator_losses, semantics, real)

    def d_only(semantics, real):
        return trainer._update(trainer.d_optimizer, trainer.discriminator.trainable_variables,
                               model.discriminator_losses, semantics, real)

    peaks = {}
    functions = {"VGG loss alone, forward and backward": vgg_only, "G step alone": g_only, "D step alone": d_only}
    if model.vgg_loss is None:
        del functions["VGG loss alone, forward and backward"]
    for name, fn in functions.items():
        fn = tf.function(fn, autograph=False)
        args = (tf.random.uniform([batch, h, w, 3], -1, 1), real) if fn.__wrapped__ is vgg_only else (semantics, real)
        tf.nest.map_structure(lambda t: t.numpy(), fn(*args))  # traced, run once: its constants allocated
        base = _rss_mib()
        reset_peak_rss()
        tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
        peaks[name] = peak_rss_mib() - base
    iterator = iter(trainer.strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(sample).repeat()))
    trainer.run_step(iterator)
    base = _rss_mib()
    reset_peak_rss()
    trainer.run_step(iterator)
    peaks["whole step (trainer.run_step), above the resident memory before it"] = peak_rss_mib() - base
    phases["resident before the last whole step"] = base
    return {"state_mib": state, "resident_mib": phases, "peak_above_resident_mib": peaks,
            "process_peak_mib": peak_rss_mib()}


def run(quick: bool = False, overrides=()) -> list:
    """Rows for `python -m bench`. `quick`: ADE20K fp32 batch 1 only. `overrides` (config
    `section.field=value`, for tests) change the networks; then no FLOPs or reference figures apply."""
    cases = [(s, p, b, False) for s in SETTINGS for p in PRECISIONS for b in (1, 2)]
    cases = cases[:1] if quick else cases + [("ade20k", "float32", 2, True)]  # and train.low_memory=true
    exact = not overrides
    rows, steps, peaks = [], {}, {}
    for setting, precision, batch, low_memory in cases:
        label, _, reference, gflop = SETTINGS[setting]
        options = (*overrides, "train.low_memory=true") if low_memory else tuple(overrides)
        result, peak = run_in_child(time_step, setting, batch, precision, options)
        steps[setting, precision, batch, low_memory], peaks[setting, precision, batch, low_memory] = result["step_s"], peak
        row = {"name": f"train/{label} {PRECISIONS[precision]} batch {batch}" + (LOW_MEMORY if low_memory else ""),
               "value": result.pop("step_s"), "unit": "s/step", "dtype": precision, "peak_rss_mib": peak, **result}
        if exact:
            row["gflops"] = gflop * batch / row["value"]
            if precision == "float32" and not low_memory:
                row["target"] = {"min": TARGET_FP32_FRACTION, "of": "fraction_alongside"}
        rows.append(row)
    for (setting, precision, batch, low_memory), step_s in steps.items():
        fp32 = steps.get((setting, "float32", batch, False))
        if precision == "bfloat16" and fp32:
            rows.append({"name": f"train/{SETTINGS[setting][0]} bf16 speed-up over fp32, batch {batch}",
                         "value": fp32 / step_s, "unit": "x", "target": {"min": TARGET_BF16_SPEEDUP}})
    if not quick:
        rows.append(lookups_vs_dense("ade20k", overrides))
    if exact:
        fp32_peak = peaks.get(("ade20k", "float32", 2, False))
        for (setting, precision, batch, low_memory), peak in peaks.items():
            if (setting, batch) != ("ade20k", 2):
                continue
            limit = PEAK_TARGET_ADE20K_BATCH_2_MIB if precision == "float32" else fp32_peak
            rows.append({"name": f"train/{SETTINGS['ade20k'][0]} {PRECISIONS[precision]} batch 2 peak memory"
                                 + (LOW_MEMORY if low_memory else ""), "value": peak, "unit": "MiB",
                         "target": {"max": limit, "note": "0.9 x the reference's peak"
                                    if precision == "float32" else "below the fp32 peak"}})
    return rows


def lookups_vs_dense(setting="ade20k", overrides=(), pairs=1) -> dict:
    """fp32 batch 1 step with mlp_shared as lookups in training (`train.spade_lookups=true`, region-wise
    SPADE) over the dense step, each in a fresh process, back to back, order alternating over `pairs`."""
    times = {"dense": [], "regions": []}
    for i in range(pairs):
        for impl in ("dense", "regions") if i % 2 == 0 else ("regions", "dense"):
            lookups = f"train.spade_lookups={'true' if impl == 'regions' else 'false'}"
            result, _ = run_in_child(time_step, setting, 1, "float32", (*overrides, lookups))
            times[impl].append(result["step_s"])
    return {"name": f"train/{SETTINGS[setting][0]} fp32 batch 1: step speed-up with mlp_shared as lookups "
                    "(train.spade_lookups=true) over dense", "value": statistics.median(
                        d / r for d, r in zip(times["dense"], times["regions"])), "unit": "x", "times_s": times}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ADE20K fp32 batch 1 only")
    parser.add_argument("--phases", action="store_true", help="peak memory by phase, ADE20K fp32 batch 2")
    options = parser.parse_args()
    if options.phases:
        import json

        phases, peak = run_in_child(memory_phases)
        print(json.dumps({**phases, "child_process_peak_mib": peak}, indent=1))
        raise SystemExit(0)
    for row in run(options.quick):
        extra = f"  {row['gflops']:.0f} GFLOP/s" if "gflops" in row else ""
        if "matmul_gflops_alongside" in row and "gflops" in row:
            extra += f" = {row['gflops'] / row['matmul_gflops_alongside']:.2f} of the matmul rate alongside"
        if "peak_rss_mib" in row:
            extra += f"  peak {row['peak_rss_mib']:.0f} MiB"
        print(f"{row['name']:<60} {row['value']:10.4g} {row['unit']}{extra}")
