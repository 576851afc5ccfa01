"""SIGTERM / SIGINT during training: the step in flight is saved, the exit code asks for a restart, the
rerun resumes there (spade_tf.training.preemption). The 2-worker case is in tests/test_cluster.py."""

import os
import signal

import pytest

from bench.preemption import latest_step, logged_steps, preempt_and_resume
from spade_tf.config import ConfigError, load_config
from spade_tf.training import preemption
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


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_sigterm_at_three_random_moments_exits_42_and_the_reruns_lose_no_step(tmp_path):
    """A chain of 4 train.py processes; the 10-signal version is `python -m bench.preemption --runs 10`."""
    records = preempt_and_resume(tmp_path, runs=3, grace=300.0, log=lambda line: None)
    assert [r["code"] for r in records] == [42, 42, 42]
    assert len({r["saved_step"] for r in records}) == 3  # every run trained and saved further
