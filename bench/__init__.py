"""Benchmarks of spade-tf on the current machine: `python -m bench` runs them all (see `bench.__main__`).

Each `bench/bench_<name>.py` has `run(quick=False) -> list[dict]`, one dict per measured figure:

- `name`, `value`, `unit` (required);
- `dtype` ("float32" | "bfloat16") with `gflops` (GFLOP/s reached): the runner adds `fraction`, the
  share of the machine's matrix-multiply rate in that dtype measured in the same run; with
  `matmul_gflops_alongside` (that rate measured in the same process, around the timing) it also adds
  `fraction_alongside`;
- `peak_rss_mib`: peak resident memory of the measurement;
- `reference`, `reference_peak_rss`: dotted paths into the reference's recorded figures
  (`REFERENCE_JSON`, e.g. "configs.ade20k.infer.bs1.images_per_s"), in the row's unit;
- `target`: {"min" | "max": number, "of": "value" (default) | "fraction" | "fraction_alongside",
  "note": text}; the runner adds `target_met`;
- anything else (details kept in results.json).
"""

import functools
import json

from spade_tf.shared import shared_dir

REFERENCE_JSON = "reference/spade_torch_cpu.json"  # under $SPADE_SHARED; absent: the column stays empty


@functools.lru_cache(maxsize=None)
def reference_figures():
    """The reference's recorded measurements (NVlabs PyTorch on a 2-core machine), or None if absent."""
    path = shared_dir() / REFERENCE_JSON
    if not path.exists():
        return None
    return json.loads(path.read_text())


def reference_figure(dotted_path: str):
    """The number at `dotted_path` in the reference's figures; None when the file is absent.

    KeyError naming the path when the file has no such entry.
    """
    figures = reference_figures()
    if figures is None:
        return None
    value = figures
    for key in dotted_path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(f"{REFERENCE_JSON} has no entry {dotted_path!r} (missing {key!r})")
        value = value[key]
    return value
