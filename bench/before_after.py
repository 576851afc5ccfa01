"""Before/after: a benchmark of an older revision against this tree, in fresh processes, interleaved.

    python -m bench.before_after --before f28568d [--after REV] [--pairs 3] [--only inference,train,train2]

Each revision is checked out in a temporary git worktree (removed at the end); without `--after`,
this working tree is the "after". Each measurement
is a fresh `python` process with PYTHONPATH and cwd set to one tree, running that tree's own bench
functions: `inference` folds the ADE20K 256x256 generator (ngf 64, dense SPADE where the tree has
`model.spade_impl`) and times fp32 batch-1 calls (`bench_inference.time_inference`); `train` (`train2`)
times one ADE20K fp32 batch-1 (batch-2) training iteration, VGG random (`bench_train.time_step`); each
child's peak resident memory is reported with it. The two trees
alternate (before, after; then after, before; ...), so a drift of the shared machine's speed hits
both alike; each pair gives after/before of the time, and the median of the pairs is the figure. On
this machine the process that runs first in a pair is measurably slower, so with an even number of pairs
the geometric mean of the ratios (each order counted equally: the order effect cancels) is reported too,
with the user-CPU ratio of a step where the trees report it.
"""

import argparse
import contextlib
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parents[1]
CHILD = """
import json, os, sys, tempfile
from spade_tf.config import Config
dense = ("model.spade_impl=dense",) if hasattr(Config().model, "spade_impl") else ()
if sys.argv[1] == "inference":
    from bench.bench_inference import MODEL, fold_to_file, time_inference
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "g.keras")
        fold_to_file("ade20k", path, MODEL + dense)
        r = time_inference("ade20k", path, "float32", 1, 5, MODEL + dense)
    seconds = 1 / r["images_per_s"]
else:
    from bench.bench_train import time_step
    r = time_step("ade20k", 2 if sys.argv[1] == "train2" else 1, "float32", dense)
    seconds = r["step_s"]
import resource
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT", json.dumps({"seconds": seconds, "matmul_gflops": r["matmul_gflops_alongside"], "peak_mib": peak,
                            "user_cpu_s": r.get("user_cpu_s"), "system_cpu_s": r.get("system_cpu_s"),
                            "page_faults": r.get("page_faults")}))
"""


def measure(tree: pathlib.Path, what: str, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", CHILD, what], cwd=tree, env=env, capture_output=True, text=True,
                         timeout=timeout)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{what} in {tree} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


@contextlib.contextmanager
def worktree(rev: str):
    folder = pathlib.Path(tempfile.mkdtemp(prefix="before-")) / "tree"
    subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", str(folder), rev], check=True,
                   capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(folder)], check=False)


def compare(before: pathlib.Path, after: pathlib.Path, what: str, pairs: int, timeout: float, log=print) -> dict:
    ratios, rows = [], []
    for i in range(pairs):
        order = [("before", before), ("after", after)][:: 1 if i % 2 == 0 else -1]
        try:
            result = {name: measure(tree, what, timeout) for name, tree in order}
        except (RuntimeError, subprocess.TimeoutExpired) as e:  # e.g. a child killed for memory on a shared machine
            log(f"{what} pair {i + 1} left out: {str(e).splitlines()[0]}")
            continue
        ratios.append(result["after"]["seconds"] / result["before"]["seconds"])
        rows.append(result)
        log(f"{what} pair {i + 1} ({order[0][0]} first): before {result['before']['seconds']:.3f} s, "
            f"after {result['after']['seconds']:.3f} s, after/before {ratios[-1]:.3f}; peak "
            f"{result['before']['peak_mib']:.0f} -> {result['after']['peak_mib']:.0f} MiB")
    median = statistics.median(ratios) if ratios else math.nan
    geometric = statistics.geometric_mean(ratios) if ratios else math.nan
    cpu = [r["after"]["user_cpu_s"] / r["before"]["user_cpu_s"] for r in rows
           if r["after"].get("user_cpu_s") and r["before"].get("user_cpu_s")]
    cpu_geometric = statistics.geometric_mean(cpu) if cpu else math.nan
    log(f"{what}: after/before time over {len(ratios)} of {pairs} pairs: median {median:.3f}, geometric mean "
        f"{geometric:.3f}; user CPU per step, geometric mean {cpu_geometric:.3f}")
    return {"pairs": rows, "ratios": ratios, "median_ratio": median, "geometric_mean_ratio": geometric,
            "user_cpu_ratios": cpu, "user_cpu_geometric_mean_ratio": cpu_geometric}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required=True, help="git revision to compare against")
    p.add_argument("--after", help="git revision to compare (default: this working tree)")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--only", default="inference,train", help="comma-separated: inference, train, train2")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per child process")
    p.add_argument("--json", type=pathlib.Path, help="also write the figures here")
    args = p.parse_args(argv)
    with worktree(args.before) as before, (worktree(args.after) if args.after else contextlib.nullcontext(HERE)) as after:
        results = {what: compare(before, after, what, args.pairs, args.timeout, lambda s: print(s, flush=True))
                   for what in args.only.split(",")}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
