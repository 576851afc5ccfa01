"""SIGTERM at random moments of a training run: every run must exit with the restart code within the
grace, and every rerun must resume at the saved step with no step lost.

A chain of `runs + 1` processes of `train.py` on the built-in data (tiny networks): each one resumes
the run folder, trains until a random moment after its first step, gets SIGTERM and must exit with
`preemption.EXIT_CODE` within `train.preemption_grace_seconds`, having saved the last step it
finished: the checkpoint's step equals the last step written to TensorBoard (logged every step), and
the next process logs that it resumes at that step. The last process trains two more steps and
exits 0. The test suite runs 3 signals (tests/test_preemption.py);

    python -m bench.preemption --runs 10

runs the 10-signal check and prints one line per signal.
"""

import argparse
import pathlib
import random
import re
import signal
import subprocess
import sys
import time

from spade_tf.shared import REPO_ROOT

TINY = ["model.ngf=8", "model.ndf=8", "train.batch_size=2", "train.steps_per_epoch=4", "train.log_every_steps=1",
        "train.save_every_steps=3", "train.sample_every_steps=2", "train.max_steps=100000"]
FIRST_STEP = re.compile(r"step (\d+) done \(the first step")


def _wait_for(path: pathlib.Path, pattern, process, timeout):
    """The first match of `pattern` in the file `path` written by `process`; RuntimeError if it exits or times out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        match = pattern.search(path.read_text(errors="replace")) if path.exists() else None
        if match:
            return match
        if process.poll() is not None:
            raise RuntimeError(f"train.py exited with {process.returncode} before {pattern.pattern!r}:\n"
                               + path.read_text(errors="replace")[-3000:])
        time.sleep(0.2)
    raise RuntimeError(f"no {pattern.pattern!r} in {path} after {timeout} s")


def latest_step(run: pathlib.Path):
    """The step of the run folder's latest checkpoint, or None."""
    steps = [int(p.name[len("ckpt-"):-len(".index")]) for p in run.glob("ckpt-*.index")]
    return max(steps) if steps else None


def logged_steps(run: pathlib.Path) -> set:
    """The steps whose generator loss is in the run's TensorBoard logs (every finished step, log_every_steps=1)."""
    import tensorflow as tf

    return {event.step for path in (run / "logs").glob("events.out.tfevents.*")
            for event in tf.compat.v1.train.summary_iterator(str(path))
            for value in event.summary.value if value.tag == "loss/GAN"}


def train_command(workdir, grace=300.0, overrides=()) -> list:
    """The chain's train.py command: run folder `<workdir>/preempted`, tiny networks, logging every step."""
    return [sys.executable, str(REPO_ROOT / "train.py"), "--config", "synthetic", "name=preempted",
            f"train.checkpoints_dir={workdir}", f"train.preemption_grace_seconds={grace}", *TINY, *overrides]


def preempt_and_resume(workdir, runs=3, grace=300.0, max_delay=4.0, seed=None, overrides=(), log=print,
                       finish=True) -> list:
    """SIGTERM `runs` times at random moments of a chain of resumed runs; returns one record per signal.

    Raises AssertionError naming the run when a process does not exit with the code within the grace,
    saves another step than the last one it finished, or a rerun does not resume at the saved step.
    `finish=False` leaves out the last run (resume, two more steps, exit 0): the caller goes on from there.
    """
    from spade_tf.training.preemption import EXIT_CODE

    workdir = pathlib.Path(workdir)
    rng = random.Random(seed)
    run = workdir / "preempted"
    args = train_command(workdir, grace, overrides)
    records, saved = [], None
    for index in range(runs + int(finish)):
        last = index == runs
        output = workdir / f"run{index}.log"
        extra = [f"train.max_steps={saved + 2}"] if last else []
        with open(output, "w") as out:
            process = subprocess.Popen(args + extra, stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
                                       env={**_env(), "PYTHONPATH": str(REPO_ROOT)})
        try:
            first = int(_wait_for(output, FIRST_STEP, process, timeout=900).group(1))
            if saved is not None:
                text = output.read_text()
                assert re.search(rf"resuming \S+ckpt-{saved} at step {saved} ", text), \
                    f"run {index} did not resume at the saved step {saved}:\n{text[-3000:]}"
                assert first == saved + 1, f"run {index}: first step {first}, expected {saved + 1}"
            if last:
                code = process.wait(timeout=900)
                assert code == 0, f"the last run exited with {code}:\n{output.read_text()[-3000:]}"
                assert latest_step(run) == saved + 2 and logged_steps(run) == set(range(1, saved + 3))
                break
            delay = rng.uniform(0, max_delay)
            time.sleep(delay)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=grace + 60)
            seconds = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        text = output.read_text(errors="replace")
        assert code == EXIT_CODE, f"run {index} exited with {code}, expected {EXIT_CODE}:\n{text[-3000:]}"
        assert seconds <= grace, f"run {index} took {seconds:.1f} s to stop, more than the grace {grace} s"
        saved, steps = latest_step(run), logged_steps(run)
        assert saved is not None and steps == set(range(1, saved + 1)), \
            f"run {index}: checkpoint at step {saved}, steps finished {sorted(steps)[-5:]}: a step was lost"
        assert f"stopped by SIGTERM after step {saved}" in text, text[-3000:]
        records.append({"run": index, "delay_s": delay, "exit_s": seconds, "saved_step": saved, "code": code})
        log(f"signal {index + 1}: SIGTERM {delay:.1f} s after step {first} -> exit {code} in {seconds:.1f} s, "
            f"saved step {saved} = the last finished step")
    return records


def _env():
    import os

    return {k: v for k, v in os.environ.items() if k != "TF_CONFIG"} | {"TF_CPP_MIN_LOG_LEVEL": "2"}


if __name__ == "__main__":
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--grace", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workdir", default=None, help="default: a temporary folder")
    options = parser.parse_args()
    workdir = options.workdir or tempfile.mkdtemp(prefix="spade_preemption_")
    started = time.monotonic()
    records = preempt_and_resume(workdir, options.runs, options.grace, seed=options.seed)
    worst = max(r["exit_s"] for r in records)
    print(f"OK: {len(records)} SIGTERMs, every run exited {records[0]['code']} (slowest in {worst:.1f} s, grace "
          f"{options.grace:g} s) and every rerun resumed at the saved step; {time.monotonic() - started:.0f} s "
          f"in all ({workdir})")
