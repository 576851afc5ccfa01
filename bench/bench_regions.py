"""Region-wise SPADE (`model.spade_impl=regions`) against the dense layout branch, same run.

Settings as `bench_inference` (ADE20K 256x256, Cityscapes 256x512 `more`, ngf 64, spectral norm
folded, a `tf.function` without XLA), fp32 and mixed bf16, batch 1 and 4, on three layouts
(`bench.layouts`): the built-in landscapes at that size, 30-region Voronoi layouts over the
dataset's classes (instance ids per cell where the dataset uses instances), and per-pixel noise.
Each (case, implementation) runs in a fresh process that loads the same folded weights; the two
processes of a pair run back to back, their order alternating from pair to pair, and the row's
ratio is the median over `--pairs` pairs (3 by default) of dense time / region time.

Also, per layout: the share of boundary pixels (the 5x5 rule of `spade_tf.layers.spade_regions`)
at every resolution the generator's SPADE layers see, and our own count of multiply-adds per image
(convolutions and matmuls, dense: the reference's network; regions: mlp_shared as lookups (no
multiply-adds), gamma/beta only at boundary pixels plus one patch per class; per layer the fewer of
the two), whose ratio is the ideal speed-up; and the same count with one patch per distinct 5x5
boundary window, as the region path computes it.

Calibration (`--calibrate`): one SPADE layer's dense convolutions and region path, timed alternately
at every (resolution, width) of the two generators on the three layouts, and the least-squares fit
of the cost model's constants (`spade_tf.layers.spade_regions.region_pays`).

    python -m bench.bench_regions [--quick] [--settings ade20k] [--precisions float32] [--batches 1] [--pairs 3]
    python -m bench.bench_regions --calibrate [--precisions float32]
"""

import argparse
import collections
import itertools
import os
import statistics
import tempfile

import numpy as np

from bench.bench_inference import PRECISIONS, SETTINGS, _timed, fold_to_file, semantics, setting_config
from bench.layouts import KINDS, layouts
from bench.machine import run_in_child

REPEATS = {False: 3, True: 1}
PAIRS = 3
TARGETS = {  # (setting, layout) -> {precision: min ratio}; Cityscapes: 0.8 of the ideal ratio
    ("ade20k", "landscapes"): {"float32": 2.0, "bfloat16": 1.6},
    ("ade20k", "voronoi30"): {"float32": 1.7, "bfloat16": 1.4},
}
NOISE_TARGET = 0.9
IDEAL_FRACTION = 0.8


def case_layouts(cfg, kind, batch, seed=0):
    h, w = cfg.image_size
    labels, instances = layouts(kind, batch, h, w, cfg.data.label_nc, seed=seed)
    return labels, (None if cfg.data.no_instance else instances)


def time_impl(setting, path, impl, precision, batch, kind, repeats, overrides=()) -> dict:
    """Loads the folded generator, rebuilds it with `impl`, times `repeats` calls (after one)."""
    import keras
    import tensorflow as tf

    from spade_tf.export.fold import PRECISION_POLICIES
    from spade_tf.models import SPADEGenerator

    cfg = setting_config(setting, overrides, precision)
    loaded = keras.saving.load_model(path)  # rebuilt with `impl` and the precision's dtype policy on every layer
    generator = SPADEGenerator.from_config(
        {**loaded.get_config(), "spade_impl": impl, "dtype": PRECISION_POLICIES[precision]})
    inputs = semantics(cfg, *case_layouts(cfg, kind, batch))
    generator(inputs[:1], training=False)
    generator.set_weights(loaded.get_weights())
    del loaded
    infer = tf.function(lambda s: generator(s, training=False), jit_compile=False)
    first_call_s = _timed(infer, inputs)
    times = [_timed(infer, inputs) for _ in range(repeats)]
    return {"time_s": statistics.median(times), "times_s": times, "first_call_s": first_call_s,
            "image": np.asarray(infer(inputs)[:1, :8, :8]).tolist()}


# --- boundary share and multiply-adds -----------------------------------------------------------

def _interior(labels, instances, factor):
    """(labels, instance edges, interior) of [batch, H, W] layouts at 1/factor resolution (top-left pixels): interior
    pixels' 5x5 windows lie inside the image and hold one class and no instance edge."""
    from spade_tf.semantics import instance_edges

    lab = np.asarray(labels)[:, ::factor, ::factor].astype(np.int32)
    edge = np.zeros_like(lab) if instances is None else np.asarray(instance_edges(instances))[:, ::factor, ::factor]
    b, h, w = lab.shape
    flat = np.zeros((b, h, w), bool)
    if h >= 5 and w >= 5:
        centre = lab[:, 2:-2, 2:-2]
        same = np.ones_like(centre, bool)
        for dy in range(5):
            for dx in range(5):
                same &= (lab[:, dy:dy + h - 4, dx:dx + w - 4] == centre) & (edge[:, dy:dy + h - 4, dx:dx + w - 4] == 0)
        flat[:, 2:-2, 2:-2] = same
    return lab, edge, flat


def boundary_share(labels, instances, factor):
    """Share of boundary pixels (the 5x5 window leaves the image, or holds another class or an
    instance edge) of [batch, H, W] layouts at 1/factor resolution (top-left pixels)."""
    return 1.0 - float(_interior(labels, instances, factor)[2].mean())


def interior_classes(labels, instances, factor):
    """Classes with interior pixels in the batch, per image: the per-class rows of the region path's
    tables (one table serves the batch)."""
    lab, _, flat = _interior(labels, instances, factor)
    return len(np.unique(lab[flat])) / len(lab)


def distinct_windows(labels, instances, factor):
    """Distinct 5x5 windows of (label, edge) codes, outside the image included, of the boundary
    pixels of each image, mean over the batch: the patches the region path convolves."""
    lab, edge, flat = _interior(labels, instances, factor)
    key = np.pad((lab.astype(np.int64) + 1) * 2 + edge, ((0, 0), (2, 2), (2, 2)))  # 0: outside
    b, h, w = lab.shape
    windows = np.stack([key[:, dy:dy + h, dx:dx + w] for dy in range(5) for dx in range(5)], -1)
    return float(np.mean([len(np.unique(windows[i][~flat[i]], axis=0)) for i in range(b)]))


def spade_layers(cfg):
    """(resolution divisor, x channels) of every SPADE layer of the generator, in order."""
    from spade_tf.models.generator import num_upsamplings

    n, nf = num_upsamplings(cfg.model.num_upsampling_layers), cfg.model.ngf
    blocks, f = [], 2**n
    blocks.append((f, 16 * nf, 16 * nf))
    f //= 2
    blocks.append((f, 16 * nf, 16 * nf))
    if n >= 6:
        f //= 2
    blocks.append((f, 16 * nf, 16 * nf))
    fin = 16 * nf
    for mult in (8, 4, 2, 1) + ((0.5,) if n == 7 else ()):
        f //= 2
        blocks.append((f, fin, int(mult * nf)))
        fin = int(mult * nf)
    layers, residual = [], 0.0
    for f, fin, fout in blocks:
        mid = min(fin, fout)
        layers += [(f, fin), (f, mid)] + ([(f, fin)] if fin != fout else [])
        residual += (9 * fin * mid + 9 * mid * fout + (fin * fout if fin != fout else 0)) / f**2
    return layers, residual, n


def multiply_adds(cfg, shares, hidden=128, classes=None, windows=None):
    """(dense, regions) multiply-adds per image, G; `shares`: divisor -> boundary share; `classes`:
    divisor -> classes with interior pixels per image (default: every class); `windows`: divisor ->
    distinct boundary windows per image (default: a patch per boundary pixel). Regions: each layer's
    fewer of its dense and its region-wise multiply-adds (a patch per boundary window and per class)."""
    h, w = cfg.image_size
    c = cfg.semantic_nc
    layers, residual, n = spade_layers(cfg)
    dense = regions = residual * h * w + 9 * c * 16 * cfg.model.ngf * h * w / 4**n + 9 * cfg.model.ngf * 3 * h * w
    if cfg.model.num_upsampling_layers == "most":
        dense = regions = dense - 9 * cfg.model.ngf * 3 * h * w + 9 * cfg.model.ngf // 2 * 3 * h * w
    for f, channels in layers:
        pixels = h * w / f**2
        shared, modulation = 9 * c * hidden * pixels, 2 * 9 * hidden * channels * pixels
        dense += shared + modulation
        rows = (shares[f] * pixels if windows is None else windows[f]) + (c + 1 if classes is None else classes[f])
        regions += min(shared + modulation, rows * modulation / pixels)
    return dense / 1e9, regions / 1e9


# --- the cost model's constants ----------------------------------------------------------------

CALIBRATION = {  # semantic channels -> (resolution, channels) of the generator's SPADE layers (ADE20K, Cityscapes)
    151: ((16, 1024), (32, 1024), (32, 512), (64, 512), (64, 256), (128, 256), (128, 128), (256, 128), (256, 64)),
    36: ((16, 1024), (32, 1024), (32, 512), (64, 512), (64, 256), (128, 256), (128, 128), (256, 128), (256, 64)),
}


def time_layer(semantic_nc, size, channels, kind, precision, repeats=3) -> dict:
    """One SPADE layer at inference, size x size: the dense path (norm, convolutions, modulation) and
    the region path (its layout computed beforehand, as a block shares it), alternating, medians;
    and the counts."""
    import tensorflow as tf
    from keras import ops

    from spade_tf.export.fold import PRECISION_POLICIES
    from spade_tf.layers import SPADE, spade_regions
    from spade_tf.semantics import semantic_input

    ade = semantic_nc == 151  # ADE20K: 150 labels + don't-care; Cityscapes: 35 labels + instance edges
    labels, instances = layouts(kind, 1, size, size, semantic_nc - 1, seed=1)
    seg = semantic_input(labels, None if ade else instances, label_nc=semantic_nc - 1, contain_dontcare_label=ade,
                         use_instance=not ade)
    x = tf.random.normal((1, size, size, channels), seed=0)
    layer = SPADE("batch", 3, 128, "regions", dtype=PRECISION_POLICIES[precision])
    layer(x, seg)
    layout = {k: tf.constant(v) for k, v in spade_regions.region_layout(seg).items()}

    def dense_output(x, s):
        scale, beta = layer.dense_modulation(s, size, size)
        return layer.normalize(x, None, False) * scale + beta

    dense = tf.function(dense_output)
    regions = tf.function(layer.region_output)
    dense(x, seg), regions(x, layout)
    times = {"dense": [], "regions": []}
    for i in range(repeats):
        for name in (("dense", "regions") if i % 2 == 0 else ("regions", "dense")):
            times[name].append(_timed(dense, x, seg) if name == "dense" else _timed(regions, x, layout))
    counts = {k: int(layout[k]) for k in ("pixels", "mixed", "boundary", "lookups", "patches")}
    return {**{k: statistics.median(v) for k, v in times.items()}, **counts,
            "taps": int(layout["mixed_rows"].shape[1]), "semantic_nc": semantic_nc, "channels": channels}


def _layers_at(semantic_nc):
    """(height, channels) -> number of SPADE layers of that size in the generator calibrated with
    `semantic_nc` channels (ADE20K 151, Cityscapes 36)."""
    cfg = setting_config("ade20k" if semantic_nc == 151 else "cityscapes")
    layers, _, _ = spade_layers(cfg)
    return collections.Counter((cfg.image_size[0] // f, channels) for f, channels in layers)


def lost_time(samples, matmul_cost, copy_cost, fixed_cost) -> float:
    """Seconds per image the cost model loses against always picking the faster path, each sample
    weighted by how many of the generator's SPADE layers it stands for."""
    lost = 0.0
    for r in samples:
        pays = matmul_cost * r["region_mac"] + copy_cost * r["moved"] + fixed_cost < r["dense_mac"]
        lost += r["layers"] * ((r["regions"] if pays else r["dense"]) - min(r["regions"], r["dense"]))
    return lost


def calibrate(precisions=("float32",), kinds=KINDS) -> dict:
    """The cost model's constants (`spade_regions.region_pays`) from per-layer times (in this process).

    A least-squares fit (dense time = a * dense multiply-adds + d; region time = a * (MATMUL_COST *
    region multiply-adds + COPY_COST * floats moved + FIXED_COST) + d, on relative times), then,
    over a grid, the constants that lose the least time per image (`lost_time`), the closest to the
    fit among equals: a fit is pulled by the many small layers, where little time is at stake.
    Returns both and the measurements."""
    samples = []
    for precision in precisions:
        for semantic_nc, shapes in CALIBRATION.items():
            layers = _layers_at(semantic_nc)
            for size, channels in shapes:
                for kind in kinds:
                    row = time_layer(semantic_nc, size, channels, kind, precision)
                    samples.append({**row, "precision": precision, "size": size, "kind": kind,
                                    "layers": layers[size, channels]})
                    print(samples[-1], flush=True)
    hidden = 128
    for r in samples:
        modulation = 2 * 9 * hidden * r["channels"]
        r["dense_mac"] = r["pixels"] * (9 * r["semantic_nc"] * hidden + modulation)
        r["region_mac"] = r["patches"] * modulation
        r["moved"] = r["taps"] * hidden * r["lookups"] + 9 * hidden * r["patches"] + 2 * r["channels"] * r["pixels"]
    weight = np.array([1 / r["dense"] for r in samples])[:, None]  # relative errors: every layer counts
    dense_fit = np.linalg.lstsq(np.array([[r["dense_mac"], 1.0] for r in samples]) * weight,
                                np.array([r["dense"] for r in samples]) * weight[:, 0], rcond=None)[0]
    region_fit = np.linalg.lstsq(np.array([[r["region_mac"], r["moved"], 1.0] for r in samples]) * weight,
                                 np.array([r["regions"] for r in samples]) * weight[:, 0], rcond=None)[0]
    a = dense_fit[0]
    fit = (region_fit[0] / a, region_fit[1] / a, (region_fit[2] - dense_fit[1]) / a)
    grid = itertools.product(np.arange(0.6, 1.35, 0.1), np.arange(30, 160, 10), np.arange(-1e9, 3e8, 1e8))
    best = min(grid, key=lambda c: (round(lost_time(samples, *c), 4),
                                    sum(((x - f) / s) ** 2 for x, f, s in zip(c, fit, (1, 100, 1e9)))))
    return {"s_per_dense_mac": a, "dense_fixed_s": dense_fit[1], "least_squares": fit,
            "lost_s_least_squares": lost_time(samples, *fit), "matmul_cost": best[0], "copy_cost": best[1],
            "fixed_cost": best[2], "lost_s": lost_time(samples, *best), "samples": samples}


# --- rows ----------------------------------------------------------------------------------------

def run(quick=False, overrides=(), settings=None, precisions=None, batches=None, kinds=KINDS, log=None,
        pairs=None) -> list:
    """Rows for `python -m bench`. `quick`: ADE20K, fp32, batch 1, one timed call. `log(row)` is
    called with each timed row as soon as it is measured. `pairs`: process pairs per case (the
    row's ratio is the median of theirs; this machine's speed drifts by a fifth within minutes)."""
    pairs = pairs or (1 if quick else PAIRS)
    settings = settings or (("ade20k",) if quick else tuple(SETTINGS))
    precisions = precisions or (("float32",) if quick else tuple(PRECISIONS))
    batches = batches or ((1,) if quick else (1, 4))
    rows, order = [], 0
    with tempfile.TemporaryDirectory(prefix="spade-bench-regions-") as tmp:
        for key in settings:
            label = SETTINGS[key].label if not overrides else f"{SETTINGS[key].label} ({' '.join(overrides)})"
            cfg = setting_config(key, overrides)
            _, _, n = spade_layers(cfg)
            ideal = {}
            for kind in kinds:
                labels, instances = case_layouts(cfg, kind, 4)
                shares = {2**k: boundary_share(labels, instances, 2**k) for k in range(n + 1)}
                classes = {2**k: interior_classes(labels, instances, 2**k) for k in range(n + 1)}
                h, w = cfg.image_size
                rows.append({"name": f"regions/boundary share, {label}, {kind}", "value": shares[1], "unit": "",
                             "by_resolution": {f"{h // f}x{w // f}": round(s, 3) for f, s in shares.items()}})
                dense, region = multiply_adds(cfg, shares, classes=classes)
                ideal[kind] = dense / region
                rows.append({"name": f"regions/ideal speed-up from our multiply-add count, {label}, {kind}",
                             "value": ideal[kind], "unit": "x", "dense_gmac_per_image": dense,
                             "regions_gmac_per_image": region})
                windows = {2**k: distinct_windows(labels, instances, 2**k) for k in range(n + 1)}
                _, distinct = multiply_adds(cfg, shares, classes=classes, windows=windows)
                rows.append({"name": f"regions/ideal speed-up, distinct boundary windows once each, {label}, {kind}",
                             "value": dense / distinct, "unit": "x", "regions_gmac_per_image": distinct,
                             "distinct_windows_by_resolution": {f"{h // f}x{w // f}": round(v) for f, v in windows.items()}})
            path = os.path.join(tmp, f"{key}.keras")
            run_in_child(fold_to_file, key, path, tuple(overrides))
            for precision in precisions:
                for batch in batches:
                    for kind in kinds:
                        result, ratios, orders = {"dense": [], "regions": []}, [], []
                        for _ in range(pairs):  # a fresh process each, back to back, order alternating
                            impls = ("dense", "regions") if order % 2 == 0 else ("regions", "dense")
                            order += 1
                            orders.append(list(impls))
                            pair = {impl: run_in_child(time_impl, key, path, impl, precision, batch, kind,
                                                       REPEATS[quick], tuple(overrides))[0] for impl in impls}
                            ratios.append(pair["dense"]["time_s"] / pair["regions"]["time_s"])
                            for impl in impls:
                                result[impl].append(pair[impl])
                        ratio = statistics.median(ratios)
                        result = {impl: {"time_s": statistics.median(r["time_s"] for r in runs),
                                         "times_s": [t for r in runs for t in r["times_s"]], "image": runs[0]["image"]}
                                  for impl, runs in result.items()}
                        difference = float(np.max(np.abs(np.subtract(result["dense"]["image"],
                                                                     result["regions"]["image"]))))
                        row = {"name": f"regions/{label} {PRECISIONS[precision]} batch {batch}, {kind}: "
                                       "region-wise images/s over dense", "value": ratio, "unit": "x",
                               "dense_images_per_s": batch / result["dense"]["time_s"],
                               "regions_images_per_s": batch / result["regions"]["time_s"],
                               "times_s": {k: v["times_s"] for k, v in result.items()}, "orders": orders,
                               "pair_ratios": [round(r, 3) for r in ratios],
                               "max_abs_diff_corner": difference, "ideal": ideal[kind]}
                        if kind == "noise":
                            row["target"] = {"min": NOISE_TARGET}
                        elif (key, kind) in TARGETS and not overrides:
                            row["target"] = {"min": TARGETS[key, kind][precision]}
                        elif not overrides:
                            row["target"] = {"min": round(IDEAL_FRACTION * ideal[kind], 2),
                                             "note": f"{IDEAL_FRACTION} of the ideal ratio"}
                        rows.append(row)
                        if log:
                            log(row)
            os.remove(path)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ADE20K fp32 batch 1 only")
    parser.add_argument("--settings", nargs="*", choices=tuple(SETTINGS))
    parser.add_argument("--precisions", nargs="*", choices=tuple(PRECISIONS))
    parser.add_argument("--batches", nargs="*", type=int)
    parser.add_argument("--layouts", nargs="*", choices=KINDS, default=KINDS)
    parser.add_argument("--pairs", type=int, help=f"process pairs per case (default {PAIRS}, 1 with --quick)")
    parser.add_argument("--calibrate", action="store_true", help="fit the cost model's constants on per-layer times")
    args = parser.parse_args()
    if args.calibrate:
        fit = calibrate(tuple(args.precisions or ("float32",)), tuple(args.layouts))
        print({k: v for k, v in fit.items() if k != "samples"})
        raise SystemExit

    def show(row):
        extra = f"  ({row['dense_images_per_s']:.3g} vs {row['regions_images_per_s']:.3g} images/s)" \
            if "dense_images_per_s" in row else ""
        extra += f"  {row['by_resolution']}" if "by_resolution" in row else ""
        extra += f"  pairs {row['pair_ratios']}" if "pair_ratios" in row else ""
        print(f"{row['name']:<100} {row['value']:8.3g} {row['unit']}{extra}", flush=True)

    for row in run(args.quick, settings=args.settings, precisions=args.precisions, batches=args.batches,
                   kinds=args.layouts, log=show, pairs=args.pairs):
        if "dense_images_per_s" not in row:
            show(row)
