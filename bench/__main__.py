"""`python -m bench`: every benchmark of the project on this machine, as JSON and a Markdown table.

    python -m bench [--quick] [--only data,inference] [--out bench/results] [--update-readme]
    python -m bench --from-results [--update-readme]   # re-render an earlier run's results.json

Each `bench/bench_<name>.py` module's `run(quick)` runs in a fresh Python process (its own memory,
TensorFlow state and dtype policy), one after the other. The machine's matrix-multiply rate is
measured in the same run; figures in GFLOP/s are also given as a fraction of it, in the same dtype.
Writes `<out>/results.json` and `<out>/results.md`; `--update-readme` puts the table in README.md
between `<!-- bench:start -->` and `<!-- bench:end -->`. Exit code 1 if a benchmark failed.
"""

import argparse
import os
import pathlib
import sys

from bench import runner

README = runner.BENCH_DIR.parent / "README.md"


def parser():
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="shorter runs of each benchmark (for development)")
    p.add_argument("--only", help=f"comma-separated benchmarks to run (default: all of {', '.join(runner.discover())})")
    p.add_argument("--out", type=pathlib.Path, default=runner.BENCH_DIR / "results",
                   help="folder for results.json and results.md (default: bench/results)")
    p.add_argument("--update-readme", action="store_true",
                   help="also write the table into README.md between the bench markers")
    p.add_argument("--from-results", action="store_true",
                   help="run nothing: render <out>/results.json again (with --update-readme: into the README)")
    return p


def main(argv=None, readme=README) -> int:
    args = parser().parse_args(argv)
    try:
        names = runner.select(runner.discover(), args.only)
        if args.update_readme:
            runner.replace_section(readme.read_text(), "", where=str(readme))  # fail before a long run
    except (ValueError, OSError) as e:
        print(f"python -m bench: {e}", file=sys.stderr)
        return 2
    if args.from_results:
        try:
            results = runner.read_results(args.out)
        except FileNotFoundError as e:
            print(f"python -m bench: {e}", file=sys.stderr)
            return 2
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # inherited by the benchmark processes
        results = runner.run_benchmarks(names, quick=args.quick)
    markdown = runner.write_results(results, args.out)
    print(markdown.read_text())
    print(f"Wrote {args.out / 'results.json'} and {markdown}")
    if args.update_readme:
        runner.update_readme(readme, markdown.read_text())
        print(f"Updated the benchmark section of {readme}")
    return 1 if any(entry.get("error") for entry in results["benchmarks"]) else 0


if __name__ == "__main__":
    sys.exit(main())
