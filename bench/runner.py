"""Runs the benchmark modules, each in a fresh process, and reports them as JSON and Markdown.

`run_benchmarks` measures the machine's matrix-multiply rate before and after the modules (each in a
fresh process too) and annotates every row: `fraction` of the rate in the row's dtype, the
whether the row's target is met. Ratios to the PyTorch reference are not made here: the reference's
figures were recorded on another day, and this machine's speed drifts by 20 % or more from day to
day; the README quotes side-by-side measurements instead. `render_markdown` turns the results
into the table the README shows between `MARKERS`.
"""

import argparse
import importlib
import json
import math
import numbers
import pathlib
import sys
import time
import traceback

from bench.machine import DTYPES, MATMUL_SIZE, load_average, machine_info, matmul_rates, run_in_child

BENCH_DIR = pathlib.Path(__file__).resolve().parent
MARKERS = ("<!-- bench:start -->", "<!-- bench:end -->")
SHORT_DTYPE = {"float32": "fp32", "bfloat16": "bf16"}


def command_line(run, doc: str, quick_help: str) -> None:
    """`python -m bench.bench_<name> [--quick]` for a module without options of its own: one line per row."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    rows = run(parser.parse_args().quick)
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        print(f"{row['name']:<{width}} {row['value']:10.4g} {row['unit']}")


def discover(folder=BENCH_DIR) -> list:
    """Names of the benchmark modules in `folder`: `bench_<name>.py` -> `name`, sorted."""
    return sorted(p.stem.removeprefix("bench_") for p in pathlib.Path(folder).glob("bench_*.py"))


def select(available, only=None) -> list:
    """The names in the comma-separated `only` (all of `available` when empty); ValueError for unknown ones."""
    if not only:
        return list(available)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise ValueError(f"no benchmark named {', '.join(unknown) or repr(only)}; "
                         f"available: {', '.join(available)}")
    return names


def check_rows(rows, module: str) -> None:
    """ValueError unless `rows` is a list of dicts with a str `name`, a numeric `value` and a str `unit`."""
    if not isinstance(rows, list):
        raise ValueError(f"{module}.run() must return a list of dicts, got {type(rows).__name__}")
    for row in rows:
        if not (isinstance(row, dict) and isinstance(row.get("name"), str) and isinstance(row.get("unit"), str)
                and isinstance(row.get("value"), numbers.Real) and not isinstance(row.get("value"), bool)):
            raise ValueError(f"{module}.run() returned a row without a str 'name', a numeric 'value' and a str "
                             f"'unit': {str(row)[:300]}")


def run_module(module: str, quick: bool) -> list:
    """`module.run(quick)`, checked (meant to run in a fresh process)."""
    rows = importlib.import_module(module).run(quick)
    check_rows(rows, module)
    return rows


def run_benchmarks(names, quick=False, package="bench", matmul_repeats=10, log=None) -> dict:
    """Runs `<package>.bench_<name>` for each name, each in a fresh process; returns the annotated results.

    A module that fails is recorded with its error (and its traceback logged); the others still run.
    """
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    results = {"machine": machine_info(), "quick": quick, "load_average": {"start": load_average()}}
    log(f"[bench] matmul rate ({MATMUL_SIZE}x{MATMUL_SIZE}, fp32 and bf16), before")
    before, _ = run_in_child(matmul_rates, matmul_repeats)
    results["benchmarks"] = []
    for name in names:
        log(f"[bench] {name}: running in a fresh process")
        start = time.perf_counter()
        entry = {"module": name}
        try:
            rows, peak = run_in_child(run_module, f"{package}.bench_{name}", quick)
            entry.update(rows=rows, peak_rss_mib=peak, error=None)
        except Exception as e:  # noqa: BLE001 - reported, and the other benchmarks still run
            log("".join(traceback.format_exception(e)))
            entry.update(rows=[], peak_rss_mib=None, error=f"{type(e).__name__}: {e}")
        entry["seconds"] = time.perf_counter() - start
        log(f"[bench] {name}: {'failed' if entry['error'] else 'done'} in {entry['seconds']:.0f} s")
        results["benchmarks"].append(entry)
    log("[bench] matmul rate, after")
    after, _ = run_in_child(matmul_rates, matmul_repeats)
    results["load_average"]["end"] = load_average()
    results["matmul_runs"] = {"before": before, "after": after}
    results["matmul_gflops"] = {d: (before[d] + after[d]) / 2 for d in DTYPES}
    annotate(results)
    return results


def target_met(row):
    """True / False when the row's target can be judged, else None (e.g. no fraction)."""
    target = row["target"]
    x = row.get(target.get("of", "value"))
    if x is None:
        return None
    return not (("min" in target and x < target["min"]) or ("max" in target and x > target["max"]))


def annotate(results) -> None:
    """Adds fractions of the matmul rate and target verdicts to every row."""
    rates = results["matmul_gflops"]
    for entry in results["benchmarks"]:
        for row in entry["rows"]:
            if "gflops" in row and row.get("dtype") in rates:
                row["fraction"] = row["gflops"] / rates[row["dtype"]]
                if row.get("matmul_gflops_alongside"):
                    row["fraction_alongside"] = row["gflops"] / row["matmul_gflops_alongside"]
            if "target" in row:
                row["target_met"] = target_met(row)


def write_results(results, out) -> pathlib.Path:
    """Writes `<out>/results.json` and `<out>/results.md`; returns the Markdown path."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    markdown = out / "results.md"
    markdown.write_text(render_markdown(results))
    return markdown


def read_results(out) -> dict:
    path = pathlib.Path(out) / "results.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `python -m bench` first")
    return json.loads(path.read_text())


# --- Markdown ------------------------------------------------------------------------------------


def fmt(value) -> str:
    """A number with about three significant digits, no exponent for ordinary magnitudes."""
    if value is None:
        return ""
    if not math.isfinite(value):
        return str(value)
    size = abs(value)
    if size >= 100 or isinstance(value, int):
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _fraction_cell(row) -> str:
    if "fraction" not in row:
        return ""
    text = f"{row['fraction']:.2f} of {SHORT_DTYPE.get(row['dtype'], row['dtype'])} ({fmt(row['gflops'])} GFLOP/s)"
    if "fraction_alongside" in row:
        text += f"; {row['fraction_alongside']:.2f} of the rate measured alongside"
    return text


def _target_cell(row) -> str:
    target = row.get("target")
    if not target:
        return ""
    of = {"fraction": " of the matmul rate", "fraction_alongside": " of the matmul rate measured alongside"}.get(
        target.get("of"), "")
    text = " ".join(f"{sign} {fmt(target[key])}{of}" for key, sign in (("min", ">="), ("max", "<=")) if key in target)
    if target.get("note"):
        text += f" ({target['note']})"
    verdict = {True: "met", False: "**not met**", None: "not judged"}[row.get("target_met")]
    return f"{text}: {verdict}"


def render_markdown(results) -> str:
    """The results as Markdown: a header line on the machine, the table, and a table of the modules."""
    m = results["machine"]
    rates = results.get("matmul_gflops", {})
    runs = results.get("matmul_runs", {})
    load = results.get("load_average", {})
    flags = f"; {', '.join(m['cpu_flags'])}" if m.get("cpu_flags") else ""
    matmul = ", ".join(
        f"{SHORT_DTYPE[d]} {fmt(rates[d])} GFLOP/s (before {fmt(runs['before'][d])}, after {fmt(runs['after'][d])})"
        for d in DTYPES if d in rates)
    lines = [
        f"Measured {m['date_utc']} UTC on {m['cpu']} ({m['cores']} cores{flags}), TensorFlow {m['tensorflow']}, "
        f"Keras {m['keras']}, with `python -m bench{' --quick' if results.get('quick') else ''}`. "
        f"Load average (1, 5, 15 min) at the start {load.get('start')}, at the end {load.get('end')}: "
        "other work on a shared machine lowers every figure.",
        "",
        f"Machine's matrix-multiply rate in the same run (`tf.linalg.matmul` {MATMUL_SIZE}x{MATMUL_SIZE}, "
        f"graph mode, no XLA, median of repeated calls, mean of a measurement before and after the benchmarks): "
        f"{matmul}.",
        "",
        "| benchmark | value | unit | fraction of the machine's matmul rate | peak RSS (MiB) | target |",
        "|---|---|---|---|---|---|",
    ]
    for entry in results["benchmarks"]:
        if entry.get("error"):
            lines.append(f"| {entry['module']} | failed: see below | | | | |")
        for row in entry["rows"]:
            cells = [row["name"], fmt(row["value"]), row["unit"], _fraction_cell(row), fmt(row.get("peak_rss_mib")),
                     _target_cell(row)]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", "| module (each in a fresh process) | wall time (s) | peak RSS of that process, not of its own "
                  "children (MiB) | status |", "|---|---|---|---|"]
    for entry in results["benchmarks"]:
        status = f"failed: {entry['error']}" if entry.get("error") else "ok"
        lines.append(f"| {entry['module']} | {fmt(entry['seconds'])} | {fmt(entry.get('peak_rss_mib'))} | "
                     f"{status.replace('|', '/')[:300]} |")
    return "\n".join(lines) + "\n"


def replace_section(text: str, markdown: str, where="README.md") -> str:
    """`text` with everything between the two MARKERS replaced by `markdown`."""
    start, end = MARKERS
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"{where} has no benchmark section: add the lines {start} and {end} (in that order) "
                         "where the table should go")
    return text[: i + len(start)] + "\n" + markdown.strip() + "\n" + text[j:]


def update_readme(readme, markdown: str) -> None:
    readme = pathlib.Path(readme)
    readme.write_text(replace_section(readme.read_text(), markdown, where=str(readme)))
