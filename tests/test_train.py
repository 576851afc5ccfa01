"""train.py end to end in subprocesses: two workers on loopback, and a run killed with SIGKILL."""

import json
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from spade_tf.training import checkpoints

from helpers import TINY  # as overrides on train.py's command line

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 600  # seconds; the machine is shared, a run normally takes well under a minute


def train_command(*overrides):
    preset = REPO / "configs" / "synthetic.yaml"  # a path: the runs' cwd holds a "synthetic" run folder
    return [sys.executable, str(REPO / "train.py"), "--config", str(preset), *TINY, *overrides]


def environment(**extra):
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **extra}


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def finish(processes, timeout=TIMEOUT):
    """Waits for every process (killing all of them after `timeout` s) -> their outputs."""
    deadline = time.monotonic() + timeout
    try:
        return [p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()


def finished_line(output):
    return next(line.split("finished at step", 1)[1] for line in output.splitlines() if "finished at step" in line)


@pytest.mark.slow
def test_two_workers_on_loopback_train_in_sync_and_only_the_chief_writes(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    for index in range(2):
        (tmp_path / f"tmp{index}").mkdir()
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        command = train_command(f"train.checkpoints_dir={tmp_path / f'worker{index}'}", "train.max_steps=3",
                                "train.save_every_steps=100", "train.sample_every_steps=2")
        env = environment(TF_CONFIG=tf_config, TMPDIR=str(tmp_path / f"tmp{index}"))
        processes.append(subprocess.Popen(command, cwd=tmp_path, env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = finish(processes)
    for index, output in enumerate(outputs):
        (tmp_path / f"worker{index}.log").write_text(output)
    for p, output in zip(processes, outputs):
        assert p.returncode == 0, output[-5000:]
    assert all("MultiWorkerMirroredStrategy with 2 replica(s) in sync" in output for output in outputs)
    chief, other = tmp_path / "worker0" / "synthetic", tmp_path / "worker1"
    assert sorted(p.name for p in chief.glob("ckpt-*.index")) == ["ckpt-3.index"]
    assert (chief / "config.yaml").is_file() and (chief / "samples" / "step_2.png").is_file()
    assert not list(other.rglob("ckpt-*")) and not list(other.rglob("*.png")) and not list(other.rglob("events.*"))
    assert not list((tmp_path / "tmp1").iterdir()), "the non-chief's temporary checkpoint folder was left behind"
    losses = [finished_line(output).split("; checkpoint")[0] for output in outputs]
    assert losses[0] == losses[1], losses  # both workers reduce the same global losses


@pytest.mark.slow
def test_run_killed_mid_training_resumes_at_its_checkpoint_with_its_learning_rate(tmp_path):
    # 2 steps per epoch: the learning rate is constant for 2 steps, then decays linearly to 0 at step 102.
    schedule = ["train.steps_per_epoch=2", "train.niter=1", "train.niter_decay=50", "train.save_every_steps=2",
                "train.keep_checkpoints=2", "train.ema_decay=0.9", f"train.checkpoints_dir={tmp_path}"]
    run = tmp_path / "synthetic"
    process = subprocess.Popen(train_command(*schedule, "train.max_steps=1000"), cwd=tmp_path, env=environment(),
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            latest = tf.train.latest_checkpoint(str(run))
            if latest and int(latest.rsplit("-", 1)[1]) >= 6:
                break
            time.sleep(0.2)
        assert process.poll() is None, process.communicate()[0][-5000:]
        time.sleep(random.uniform(0.0, 1.0))  # anywhere in a step or a save
        process.send_signal(signal.SIGKILL)
    finally:
        output = finish([process])[0]
    assert process.returncode == -signal.SIGKILL

    # The latest checkpoint is complete. (A kill while old checkpoints are deleted can leave them
    # listed but gone, and a kill while writing can leave a ckpt-<n>_temp folder: both harmless.)
    state = tf.train.get_checkpoint_state(str(run))
    latest = state.model_checkpoint_path
    assert "step/.ATTRIBUTES/VARIABLE_VALUE" in tf.train.load_checkpoint(latest).get_variable_to_shape_map()
    step = int(latest.rsplit("-", 1)[1])

    from spade_tf.training.trainer import Trainer

    resumed = Trainer(checkpoints.load_run_config(run))
    assert resumed.restore(run) == latest
    assert int(resumed.step.numpy()) == step and int(resumed.g_optimizer.iterations) == step
    expected = [lr * (1 - (step - 2) / 100) for lr in (1e-4, 4e-4)]  # TTUR: lr / 2 and lr * 2
    assert resumed.learning_rates() == pytest.approx(expected, rel=1e-5)

    # A new process continues from there to step + 2, then stops normally with a checkpoint.
    result = subprocess.run(train_command(*schedule, f"train.max_steps={step + 2}"), cwd=tmp_path,
                            env=environment(), text=True, capture_output=True, timeout=TIMEOUT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert f"resuming {latest} at step {step} (learning rates G {expected[0]:.3g}, D {expected[1]:.3g})" in output
    assert f"finished at step {step + 2}" in output
    assert tf.train.latest_checkpoint(str(run)).endswith(f"ckpt-{step + 2}")
    for path in tf.train.get_checkpoint_state(str(run)).all_model_checkpoint_paths:  # stale entries swept
        tf.train.load_checkpoint(path)
    assert not list(run.glob("*_temp"))

    # After that normal stop, a rerun continues from the last step rather than starting over.
    result = subprocess.run(train_command(*schedule, f"train.max_steps={step + 2}"), cwd=tmp_path,
                            env=environment(), text=True, capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 0 and f"already at step {step + 2}" in result.stdout + result.stderr


def test_bad_config_value_is_a_clear_error(tmp_path):
    result = subprocess.run(train_command("train.gan_mode=hinj", f"train.checkpoints_dir={tmp_path}"), cwd=tmp_path,
                            env=environment(), text=True, capture_output=True, timeout=TIMEOUT)
    assert result.returncode != 0 and "train.gan_mode" in result.stderr and "hinge" in result.stderr
