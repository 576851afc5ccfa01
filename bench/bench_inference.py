"""Generator inference: images/s, share of the machine's matrix-multiply rate, peak memory, the
accuracy of mixed bfloat16, and the exported SavedModel against the Keras model it came from.

Settings: ADE20K 256x256 (151 semantic channels) and Cityscapes 256x512 (`more`, 36 channels), ngf
64, the reference's defaults. Inference as the export runs it: spectral norm folded into the
kernels (`spade_tf.export.fold`), a `tf.function` without XLA, in fp32 or mixed bfloat16.

- Speed: each (setting, precision, batch) runs in a fresh process (the dtype policy is global),
  which loads the folded generator from a .keras file written once per setting, so that its peak
  memory (counted from after loading: TensorFlow, the weights, the activations) is the one of a
  process holding only the inference model. Median of several calls after a warm-up call. GFLOP/s
  count the reference's FLOPs per image (conv/matmul, `spade_torch_cpu.json`; the networks are the
  same, parameter for parameter). The matmul rate is also measured in the same process, between the
  timed calls; the targets are judged against that rate, as the machine is shared and its speed
  drifts over the minutes between the runner's own measurements.
- bf16 accuracy: the same weights folded into an fp32 and a bf16 network, PSNR of the bf16 output
  against the fp32 one on the [-1, 1] scale (peak-to-peak 2) and after rounding both to uint8.
  Judged on a trained model: a small SPADE (ngf 16, 64x64) trained on the built-in data in a child
  process (`TRAINED`, about 200 steps), on its held-out layouts. Also, as a worst case without a
  target, the ADE20K network with random gain-1 weights (Glorot normal; batch-norm statistics
  calibrated on random layouts), plus its signal-to-noise ratio (the fp32 images' variance over the
  squared error): there the rounding error of bf16 (2^-9 relative per operation) compounds evenly
  through the 7 residual blocks (the relative error grows from 0.2% after `fc` to 2% before
  `conv_img`), which trained weights do not show.
- Export: `serving_default` of the exported SavedModel (fp32, and the bf16 variant,
  `export.precision`), loaded in-process with `tf.saved_model.load`, against the folded Keras
  generator with the same pre- and post-processing (label map -> semantic input -> image ->
  uint8), at batch 1, in pairs of calls back to back (order alternating); the ratio is the median
  of the pairs' ratios, which a change of the machine's speed between pairs does not bias.

    python -m bench.bench_inference [--quick]
"""

import dataclasses
import math
import os
import pathlib
import statistics
import tempfile
import time

import numpy as np

from bench.machine import matmul_timer, reset_peak_rss, run_in_child


@dataclasses.dataclass(frozen=True)
class Setting:
    label: str
    preset: str
    reference: str  # key under "configs" in spade_torch_cpu.json
    gflop_per_image: float  # the reference's configs.<reference>.setup.flops.G_forward_per_image / 1e9


SETTINGS = {
    "ade20k": Setting("ADE20K 256x256", "ade20k", "ade20k", 362.300145664),
    "cityscapes": Setting("Cityscapes 256x512 more", "cityscapes", "cityscapes_more", 562.553225216),
}
MODEL = ("model.ngf=64",)
PRECISIONS = {"float32": "fp32", "bfloat16": "bf16"}
TARGET_FRACTION = {"float32": 0.9, "bfloat16": 0.85}
TARGET_PSNR_DB = 45.0
TRAINED = ("name=bf16-accuracy", "model.ngf=16", "model.ndf=16", "train.batch_size=4", "train.ema_decay=0.95",
           "train.log_every_steps=50")  # + max_steps, save/sample_every_steps, checkpoints_dir
TRAINED_STEPS = {False: 200, True: 20}  # by `quick`
TARGET_EXPORT_RATIO = 1.05


def setting_config(setting: str, overrides=(), precision="float32"):
    from spade_tf.config import load_config

    s = SETTINGS[setting]
    return load_config(s.preset, [*MODEL, *overrides, f"export.precision={precision}"])


def random_layouts(cfg, batch: int, seed: int = 0):
    """Blocky label maps (an 8-block grid on the short side) uint8 [batch, H, W], and instance
    maps int32 (one id per block) when the model uses them, else None."""
    h, w = cfg.image_size
    block = max(1, min(h, w) // 8)
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, cfg.data.label_nc, (batch, -(-h // block), -(-w // block)))

    def expand(a):
        return a.repeat(block, axis=1).repeat(block, axis=2)[:, :h, :w]

    labels = expand(grid).astype(np.uint8)
    instances = None if cfg.data.no_instance else expand(np.arange(grid.size).reshape(grid.shape)).astype(np.int32)
    return labels, instances


def semantics(cfg, labels, instances):
    from spade_tf.semantics import semantic_input

    d = cfg.data
    return semantic_input(labels, instances, label_nc=d.label_nc, contain_dontcare_label=d.contain_dontcare_label,
                          use_instance=not d.no_instance)


def _timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    for tensor in out.values() if isinstance(out, dict) else [out]:
        tensor.numpy()
    return time.perf_counter() - start


# --- measurements, each meant to run in a fresh process (bench.machine.run_in_child) -------------


def fold_to_file(setting: str, path: str, overrides=()) -> None:
    """Builds the setting's generator, folds its spectral norm and saves the folded network (.keras)."""
    from spade_tf.export.fold import inference_networks
    from spade_tf.models import build_generator

    cfg = setting_config(setting, overrides)
    generator, _ = inference_networks(cfg, build_generator(cfg))
    generator.save(path)


def time_inference(setting: str, path: str, precision: str, batch: int, repeats: int, overrides=()) -> dict:
    """Loads a folded generator in `precision` and times `repeats` calls on `batch` layouts."""
    import keras
    import tensorflow as tf

    from spade_tf.export.fold import PRECISION_POLICIES

    cfg = setting_config(setting, overrides, precision)
    saved = keras.saving.load_model(path)  # rebuilt with the precision's dtype policy on every layer
    generator = type(saved).from_config({**saved.get_config(), "dtype": PRECISION_POLICIES[precision]})
    generator.set_weights(saved.get_weights())
    del saved
    inputs = semantics(cfg, *random_layouts(cfg, batch))
    infer = tf.function(lambda s: generator(s, training=False), jit_compile=False)
    matmul = matmul_timer(precision)
    since_load = reset_peak_rss()
    first_call_s = _timed(infer, inputs)
    times, rates = [], []
    for _ in range(repeats):  # the matmul rate between generator calls: the same conditions for both
        times.append(_timed(infer, inputs))
        rates.append(matmul(3))
    return {
        "images_per_s": batch / statistics.median(times),
        "times_s": times,
        "first_call_s": first_call_s,
        "matmul_gflops_alongside": statistics.median(rates),
        "conv_compute_dtype": generator.get_layer("fc").compute_dtype,
        "peak_rss_from": "after loading the model" if since_load else "process start",
    }


def calibrate_batch_norm(network, inputs) -> None:
    """Sets every batch norm's moving statistics to those of one training-mode pass on `inputs`."""
    import keras

    norms = [layer for layer in network._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0  # moving = momentum * moving + (1 - momentum) * batch
    try:
        network(inputs, training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum


def psnr(a, b, peak: float) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def bf16_accuracy(setting: str, batch: int, overrides=()) -> dict:
    """PSNR of the bf16 network's images against the fp32 network's, with the same folded weights."""
    import tensorflow as tf

    from spade_tf.export.fold import inference_networks
    from spade_tf.export.module import to_uint8
    from spade_tf.models import build_generator

    overrides = [*overrides, "model.init_variance=1.0"]
    cfg = setting_config(setting, overrides)
    source = build_generator(cfg)
    calibrate_batch_norm(source, semantics(cfg, *random_layouts(cfg, 2, seed=1)))
    inputs = semantics(cfg, *random_layouts(cfg, batch, seed=2))
    images = {}
    for precision in PRECISIONS:
        generator, _ = inference_networks(setting_config(setting, overrides, precision), source)
        images[precision] = tf.function(lambda s, g=generator: g(s, training=False), jit_compile=False)(inputs)
    fp32, bf16 = images["float32"], images["bfloat16"]
    std = float(np.std(fp32.numpy()))
    return {
        "psnr_db": psnr(fp32, bf16, peak=2.0),
        "psnr_uint8_db": psnr(to_uint8(fp32), to_uint8(bf16), peak=255.0),
        "snr_db": psnr(fp32, bf16, peak=std),  # error relative to the images' own spread
        "max_abs_diff": float(np.max(np.abs(fp32.numpy() - bf16.numpy()))),
        "fp32_output_std": std,
    }


def train_small_model(parent: str, steps: int) -> str:
    """Trains the `TRAINED` model on the built-in data for `steps` steps under `parent`; its run folder."""
    from spade_tf.config import load_config
    from spade_tf.training.trainer import Trainer

    cfg = load_config("synthetic", [*TRAINED, f"train.max_steps={steps}", f"train.save_every_steps={steps}",
                                    f"train.sample_every_steps={steps}", f"train.checkpoints_dir={parent}"])
    return str(Trainer(cfg).train())


def bf16_accuracy_trained(run: str, samples: int = 16) -> dict:
    """PSNR of a trained run's bf16 network against its fp32 one, on `samples` held-out layouts."""
    import tensorflow as tf

    from spade_tf.config import replace
    from spade_tf.data.pipeline import build_dataset
    from spade_tf.export.fold import inference_networks
    from spade_tf.export.module import to_uint8
    from spade_tf.training.checkpoints import restore_networks

    cfg, source, _ = restore_networks(run)
    batch = next(iter(build_dataset(cfg, "val", batch_size=samples)))
    inputs = semantics(cfg, batch["label"], batch.get("instance"))
    images = {}
    for precision in PRECISIONS:
        generator, _ = inference_networks(replace(cfg, {"export.precision": precision}), source)
        images[precision] = tf.function(lambda s, g=generator: g(s, training=False), jit_compile=False)(inputs)
    fp32, bf16 = images["float32"], images["bfloat16"]
    return {
        "psnr_db": psnr(fp32, bf16, peak=2.0),
        "psnr_uint8_db": psnr(to_uint8(fp32), to_uint8(bf16), peak=255.0),
        "max_abs_diff": float(np.max(np.abs(fp32.numpy() - bf16.numpy()))),
        "fp32_output_std": float(np.std(fp32.numpy())),
        "image_size": list(cfg.image_size),
        "samples": samples,
    }


def savedmodel_vs_keras(setting: str, precision: str, pairs: int, overrides=()) -> dict:
    """Times the exported `serving_default` (loaded in-process) and the folded Keras generator with
    the same pre- and post-processing, interleaved, at batch 1, both in `precision`."""
    import tensorflow as tf

    from spade_tf.export import export_model
    from spade_tf.export.fold import inference_networks
    from spade_tf.export.module import to_uint8
    from spade_tf.models import build_generator

    cfg = setting_config(setting, overrides, precision)
    source = build_generator(cfg)
    calibrate_batch_norm(source, semantics(cfg, *random_layouts(cfg, 1, seed=1)))  # else bf16 may saturate
    labels, instances = random_layouts(cfg, 1, seed=3)
    inputs = {"label_map": tf.constant(labels)}
    if instances is not None:
        inputs["instance_map"] = tf.constant(instances)
    generator, _ = inference_networks(cfg, source)

    def keras_generate(label_map, instance_map=None):
        return to_uint8(generator(semantics(cfg, label_map, instance_map), training=False))

    keras_fn = tf.function(keras_generate, jit_compile=False)
    with tempfile.TemporaryDirectory(prefix="spade-bench-export-") as tmp:
        loaded = tf.saved_model.load(str(export_model(cfg, source, export_dir=pathlib.Path(tmp) / "spade")))
        serve = loaded.signatures["serving_default"]
        calls = {"savedmodel": lambda: serve(**inputs), "keras": lambda: keras_fn(**inputs)}
        difference = int(np.max(np.abs(calls["savedmodel"]()["image"].numpy().astype(int)
                                       - calls["keras"]().numpy().astype(int))))
        times = {name: [] for name in calls}
        for i in range(pairs):
            for name in (("savedmodel", "keras") if i % 2 == 0 else ("keras", "savedmodel")):
                times[name].append(_timed(calls[name]))
    return {
        "ratio": statistics.median(s / k for s, k in zip(times["savedmodel"], times["keras"])),
        "savedmodel_images_per_s": 1 / statistics.median(times["savedmodel"]),
        "keras_images_per_s": 1 / statistics.median(times["keras"]),
        "times_s": times,
        "max_abs_diff_uint8": difference,
    }


# --- rows ------------------------------------------------------------------------------------------


def run(quick: bool = False, overrides=(), trained_run=None) -> list:
    """All measurements as result rows. `quick`: ADE20K only, batch 1, fewer repeats. `overrides`
    (config `section.field=value`, for tests) change the networks; then no FLOPs or reference
    figures apply. `trained_run`: a run folder to judge bf16 on instead of training the `TRAINED`
    model here (tests pass one they already have)."""
    settings = ("ade20k",) if quick else tuple(SETTINGS)
    batches = (1,) if quick else (1, 4)
    repeats = 2 if quick else 5
    exact = not overrides
    rows = []
    with tempfile.TemporaryDirectory(prefix="spade-bench-") as tmp:
        for key in settings:
            s = SETTINGS[key]
            path = os.path.join(tmp, f"{key}.keras")
            run_in_child(fold_to_file, key, path, tuple(overrides))
            for precision, short in PRECISIONS.items():
                for batch in batches:
                    result, peak = run_in_child(time_inference, key, path, precision, batch, repeats, tuple(overrides))
                    speed = result.pop("images_per_s")
                    row = {"name": f"inference/{s.label} {short} batch {batch}", "value": speed,
                           "unit": "images/s", "dtype": precision, "peak_rss_mib": peak, **result,
                           "target": {"min": TARGET_FRACTION[precision], "of": "fraction_alongside"}}
                    if exact:
                        row["gflops"] = speed * s.gflop_per_image
                    rows.append(row)
            os.remove(path)

    if trained_run is None:
        steps = TRAINED_STEPS[quick]
        with tempfile.TemporaryDirectory(prefix="spade-bench-trained-") as tmp:
            run_dir, _ = run_in_child(train_small_model, tmp, steps)
            trained, _ = run_in_child(bf16_accuracy_trained, run_dir)
        case = f"trained model (built-in data {'x'.join(map(str, trained['image_size']))}, ngf 16, {steps} steps)"
    else:
        trained, _ = run_in_child(bf16_accuracy_trained, str(trained_run))
        case = f"trained model ({trained_run})"
    rows += [
        {"name": f"inference/bf16 vs fp32 PSNR, {case}", "value": trained["psnr_db"], "unit": "dB",
         "target": {"min": TARGET_PSNR_DB}, **trained},
        {"name": f"inference/bf16 vs fp32 PSNR on uint8, {case}", "value": trained["psnr_uint8_db"], "unit": "dB",
         "target": {"min": TARGET_PSNR_DB}},
    ]
    label = f"{SETTINGS['ade20k'].label}, random gain-1 weights (worst case, no target)"
    accuracy, _ = run_in_child(bf16_accuracy, "ade20k", 1 if quick else 2, tuple(overrides))
    rows += [
        {"name": f"inference/bf16 vs fp32 PSNR, {label}", "value": accuracy["psnr_db"], "unit": "dB", **accuracy},
        {"name": f"inference/bf16 vs fp32 PSNR on uint8, {label}", "value": accuracy["psnr_uint8_db"], "unit": "dB"},
        {"name": f"inference/bf16 vs fp32 signal-to-noise ratio (fp32 image variance / squared error), {label}",
         "value": accuracy["snr_db"], "unit": "dB"},
        {"name": f"inference/bf16 vs fp32 max abs difference ([-1, 1] scale), {label}",
         "value": accuracy["max_abs_diff"], "unit": ""},
    ]
    for precision in ("float32",) if quick else tuple(PRECISIONS):
        export, _ = run_in_child(savedmodel_vs_keras, "ade20k", precision, 2 if quick else 7, tuple(overrides))
        case = f"{SETTINGS['ade20k'].label} {PRECISIONS[precision]} batch 1"
        rows += [
            {"name": f"inference/exported SavedModel in-process, {case}", "value": export["savedmodel_images_per_s"],
             "unit": "images/s"},
            {"name": f"inference/Keras generator it came from, {case}", "value": export["keras_images_per_s"],
             "unit": "images/s"},
            {"name": f"inference/SavedModel time / Keras time, {case}", "value": export["ratio"], "unit": "x",
             "target": {"max": TARGET_EXPORT_RATIO}, "times_s": export["times_s"],
             "max_abs_diff_uint8": export["max_abs_diff_uint8"]},
        ]
    return rows


if __name__ == "__main__":
    from bench.runner import command_line

    command_line(run, __doc__, "ADE20K only, batch 1, fewer repeats")
