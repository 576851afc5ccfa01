"""SIGTERM / SIGINT during training: the step in flight is saved, the exit code asks for a restart, the
rerun resumes there (spade_tf.training.preemption); and SIGKILL, after which the run resumes at its
latest checkpoint. The 2-worker case is in tests/test_cluster.py."""

import os
import random
import re
import signal
import subprocess
import time

import pytest

from bench.preemption import latest_step, logged_steps, preempt_and_resume, train_command
from spade_tf.config import ConfigError, load_config
from spade_tf.training import checkpoints, preemption
from spade_tf.training.trainer import Trainer

TINY = ["model.ngf=8", "model.ndf=8", "train.batch_size=2", "train.steps_per_epoch=4", "train.log_every_steps=1"]


def test_a_signal_sets_the_flag_and_the_previous_handlers_come_back():
    import tensorflow as tf

    before = {s: signal.getsignal(s) for s in preemption.SIGNALS}
    with preemption.PreemptionWatch(tf.distribute.get_strategy(), grace_seconds=30) as watch:
        assert not watch.should_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert watch.should_stop() and watch.signum == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM changes nothing
        with pytest.raises(preemption.Preempted) as stop:
            watch.stop(7, lambda: "ckpt-7")
    assert stop.value.deadline.is_alive()  # the grace also bounds the process's teardown (train.py)
    stop.value.deadline.cancel()
    assert stop.value.exit_code == preemption.EXIT_CODE == 42 and stop.value.step == 7
    assert "SIGTERM: stopped after step 7 (saved step 7 in ckpt-7)" in str(stop.value)
    assert {s: signal.getsignal(s) for s in preemption.SIGNALS} == before
    assert preemption.Preempted(signal.SIGINT, 3, None).exit_code == 130


def test_sigint_in_a_run_saves_the_step_in_flight_and_a_second_one_interrupts(tmp_path, monkeypatch):
    cfg = load_config("synthetic", [*TINY, f"train.checkpoints_dir={tmp_path}", "train.max_steps=50"])
    trainer = Trainer(cfg)
    run_step = trainer.run_step

    def interrupted_during_step_3(iterator):
        if int(trainer.step.numpy()) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, in the middle of the step
            os.kill(os.getpid(), signal.SIGTERM)  # ignored: already stopping
        return run_step(iterator)

    monkeypatch.setattr(trainer, "run_step", interrupted_during_step_3)
    with pytest.raises(preemption.Preempted) as stop:
        trainer.train()
    stop.value.deadline.cancel()
    run = tmp_path / "synthetic"
    assert (stop.value.step, stop.value.exit_code) == (3, 130)
    assert latest_step(run) == 3 and logged_steps(run) == {1, 2, 3}
    assert int(trainer.g_optimizer.iterations) == 3

    def interrupted_twice(iterator):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # raises KeyboardInterrupt in the handler
        return run_step(iterator)

    monkeypatch.setattr(trainer, "run_step", interrupted_twice)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert latest_step(run) == 3  # nothing finished, nothing saved


def test_the_grace_is_a_positive_number_of_its_own():
    with pytest.raises(ConfigError, match="preemption_grace_seconds' must be > 0"):
        load_config("synthetic", ["train.preemption_grace_seconds=0"])
    cfg = load_config("synthetic", ["preemption_grace_seconds=5", "grace_seconds=3"])  # both bare names are unique
    assert (cfg.train.preemption_grace_seconds, cfg.serve.grace_seconds) == (5.0, 3.0)


# 2 steps per epoch: the learning rate is constant for 2 steps, then decays linearly to 0 at step 1002.
SCHEDULE = ["train.steps_per_epoch=2", "train.niter=1", "train.niter_decay=500", "train.save_every_steps=2",
            "train.keep_checkpoints=2", "train.ema_decay=0.9"]
TIMEOUT = 900  # seconds for one train.py process; the machine is shared, a run normally takes well under a minute


def _run(command, cwd):
    result = subprocess.run(command, cwd=cwd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, text=True,
                            capture_output=True, timeout=TIMEOUT)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_sigterm_at_three_random_moments_then_sigkill_and_the_reruns_lose_no_step(tmp_path):
    """One chain of train.py processes on one run folder. SIGTERM at 3 random moments: each exits 42, having
    saved the step it finished, and the next one resumes there (`bench.preemption`; the 10-signal version is
    `python -m bench.preemption --runs 10`). Then SIGKILL at a random moment: the latest checkpoint is complete
    and a new process resumes it with its learning rate, finishes normally, and a rerun has nothing to do."""
    records = preempt_and_resume(tmp_path, runs=3, grace=300.0, overrides=SCHEDULE, log=lambda line: None,
                                 finish=False)
    assert [r["code"] for r in records] == [42, 42, 42]
    assert len({r["saved_step"] for r in records}) == 3  # every run trained and saved further
    run, sigterm_step = tmp_path / "preempted", records[-1]["saved_step"]

    command = train_command(tmp_path, overrides=SCHEDULE)
    with open(tmp_path / "killed.log", "w") as out:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and process.poll() is None and latest_step(run) < sigterm_step + 4:
            time.sleep(0.2)
        assert process.poll() is None, (tmp_path / "killed.log").read_text()[-5000:]
        time.sleep(random.uniform(0.0, 1.0))  # anywhere in a step or a save
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert re.search(rf"resuming \S+ckpt-{sigterm_step} at step {sigterm_step} ", (tmp_path / "killed.log").read_text())

    # The latest checkpoint is complete. (A kill while old checkpoints are deleted can leave them
    # listed but gone, and a kill while writing can leave a ckpt-<n>_temp folder: both harmless.)
    import tensorflow as tf

    latest = tf.train.get_checkpoint_state(str(run)).model_checkpoint_path
    assert "step/.ATTRIBUTES/VARIABLE_VALUE" in tf.train.load_checkpoint(latest).get_variable_to_shape_map()
    step = int(latest.rsplit("-", 1)[1])
    resumed = Trainer(checkpoints.load_run_config(run))
    assert resumed.restore(run) == latest
    assert int(resumed.step.numpy()) == step and int(resumed.g_optimizer.iterations) == step
    expected = [lr * (1 - (step - 2) / 1000) for lr in (1e-4, 4e-4)]  # TTUR: lr / 2 and lr * 2
    assert resumed.learning_rates() == pytest.approx(expected, rel=1e-5)

    # A new process continues from there to step + 2, then stops normally with a checkpoint.
    code, output = _run(command + [f"train.max_steps={step + 2}"], tmp_path)
    assert code == 0, output[-5000:]
    assert f"resuming {latest} at step {step} (learning rates G {expected[0]:.3g}, D {expected[1]:.3g})" in output
    assert f"finished at step {step + 2}" in output
    assert tf.train.latest_checkpoint(str(run)).endswith(f"ckpt-{step + 2}")
    for path in tf.train.get_checkpoint_state(str(run)).all_model_checkpoint_paths:  # stale entries swept
        tf.train.load_checkpoint(path)
    assert not list(run.glob("*_temp"))

    # After that normal stop, a rerun continues from the last step rather than starting over.
    code, output = _run(command + [f"train.max_steps={step + 2}"], tmp_path)
    assert code == 0 and f"already at step {step + 2}" in output
