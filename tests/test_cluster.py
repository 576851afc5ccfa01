"""TF_CONFIG from a pod's environment (spade_tf.cluster), and a 2-worker run through the launcher."""

import json
import os
import pathlib
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from spade_tf import cluster
from spade_tf.shared import REPO_ROOT

from helpers import TINY


def pod_env(index=None, workers=None, **extra):
    """The variables deploy/k8s/base/training.yaml gives a pod (the downward API values filled in)."""
    env = {"SPADE_JOB_NAME": "spade-train", "SPADE_SERVICE": "spade-train", "SPADE_NAMESPACE": "ml",
           "SPADE_WORKER_PORT": "2222"}
    if index is not None:
        env["JOB_COMPLETION_INDEX"] = str(index)
    if workers is not None:
        env["SPADE_NUM_WORKERS"] = str(workers)
    env.update(extra)
    return env


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_every_index_of_an_indexed_job_gets_the_same_cluster_and_its_own_task(workers):
    expected = [f"spade-train-{i}.spade-train.ml.svc:2222" for i in range(workers)]
    for index in range(workers):
        config = cluster.tf_config_from_env(pod_env(index, workers))
        assert config == {"cluster": {"worker": expected}, "task": {"type": "worker", "index": index}}
        assert json.loads(json.dumps(config)) == config


def test_tensorflow_reads_the_derived_tf_config(monkeypatch):
    tf = pytest.importorskip("tensorflow")
    config = cluster.tf_config_from_env(pod_env(2, 3))
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    assert resolver.cluster_spec().as_dict() == {"worker": [f"spade-train-{i}.spade-train.ml.svc:2222" for i in range(3)]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 2)


def test_statefulset_pod_name_gives_the_index_and_the_name():
    env = pod_env(workers=4, POD_NAME="gaugan-3")
    del env["SPADE_JOB_NAME"]
    config = cluster.tf_config_from_env(env)
    assert config["task"] == {"type": "worker", "index": 3}
    assert config["cluster"]["worker"][0] == "gaugan-0.spade-train.ml.svc:2222"
    assert config["cluster"]["worker"][3] == "gaugan-3.spade-train.ml.svc:2222"


def test_job_completion_index_wins_over_the_pod_name():
    env = pod_env(1, 2, POD_NAME="spade-train-1-x7k2p")  # an indexed Job's pod name: <job>-<index>-<random>
    assert cluster.worker_index(env) == 1


def test_port_defaults_to_2222_and_the_template_can_drop_the_namespace():
    env = pod_env(0, 2, SPADE_WORKER_ADDRESS_TEMPLATE="{job}-{index}.{service}:{port}")
    del env["SPADE_WORKER_PORT"], env["SPADE_NAMESPACE"]
    assert cluster.worker_addresses(env) == ["spade-train-0.spade-train:2222", "spade-train-1.spade-train:2222"]


def test_explicit_addresses_override_the_template():
    env = {"JOB_COMPLETION_INDEX": "1", "SPADE_WORKER_ADDRESSES": " 127.0.0.1:4001, 127.0.0.1:4002 "}
    assert cluster.tf_config_from_env(env) == {
        "cluster": {"worker": ["127.0.0.1:4001", "127.0.0.1:4002"]}, "task": {"type": "worker", "index": 1}}


@pytest.mark.parametrize("env, names", [
    (pod_env(workers=2), ["JOB_COMPLETION_INDEX", "POD_NAME"]),
    (pod_env("one", 2), ["JOB_COMPLETION_INDEX", "'one'", "integer"]),
    (pod_env("-1", 2), ["JOB_COMPLETION_INDEX", "integer >= 0"]),
    (pod_env(2, 2), ["index 2", "0..1"]),
    (pod_env(0), ["SPADE_NUM_WORKERS"]),
    (pod_env(0, 0), ["SPADE_NUM_WORKERS", "integer >= 1"]),
    (pod_env(0, "two"), ["SPADE_NUM_WORKERS", "'two'"]),
    (pod_env(0, 2, SPADE_SERVICE=""), ["SPADE_SERVICE", "{service}"]),
    (pod_env(0, 2, SPADE_NAMESPACE=" "), ["SPADE_NAMESPACE", "{namespace}"]),
    (pod_env(0, 2, SPADE_JOB_NAME=""), ["SPADE_JOB_NAME", "POD_NAME"]),
    (pod_env(0, 2, SPADE_WORKER_PORT="http"), ["SPADE_WORKER_PORT", "'http'"]),
    (pod_env(0, 2, SPADE_WORKER_PORT="70000"), ["70000", "1..65535"]),
    (pod_env(workers=2, POD_NAME="trainer"), ["POD_NAME", "'trainer'", "<ordinal>"]),
    (pod_env(0, 2, SPADE_WORKER_ADDRESS_TEMPLATE="{host}:{port}"), ["{host}", "{index}", "{namespace}"]),
    (pod_env(0, 2, SPADE_WORKER_ADDRESS_TEMPLATE="{index"), ["SPADE_WORKER_ADDRESS_TEMPLATE", "not a valid"]),
    (pod_env(0, 2, SPADE_WORKER_ADDRESS_TEMPLATE="localhost:{port}"), ["distinct", "localhost:2222"]),
    (pod_env(0, 3, SPADE_WORKER_ADDRESSES="a:1,b:2"), ["SPADE_NUM_WORKERS=3", "2 address"]),
    (pod_env(0, SPADE_WORKER_ADDRESSES="a:1,b"), ["'b'", "host:port"]),
])
def test_bad_environments_are_errors_naming_the_variable(env, names):
    with pytest.raises(cluster.ClusterConfigError) as info:
        cluster.tf_config_from_env(env)
    for name in names:
        assert name in str(info.value)


@pytest.fixture
def captured_exec(monkeypatch):
    """Replaces os.execve: records (path, argv, env) instead of replacing the process."""
    calls = []
    monkeypatch.setattr(cluster.os, "execve", lambda path, argv, env: calls.append((path, argv, env)))
    return calls


def test_launcher_sets_tf_config_and_runs_train_py_with_the_rest(monkeypatch, captured_exec, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for name, value in pod_env(1, 2).items():
        monkeypatch.setenv(name, value)
    cluster.main(["train", "--", "--config", "synthetic", "train.max_steps=3"])
    [(path, argv, env)] = captured_exec
    assert path == sys.executable
    assert argv == [sys.executable, "-m", "spade_tf.commands.train", "--config", "synthetic", "train.max_steps=3"]
    assert json.loads(env["TF_CONFIG"]) == {
        "cluster": {"worker": ["spade-train-0.spade-train.ml.svc:2222", "spade-train-1.spade-train.ml.svc:2222"]},
        "task": {"type": "worker", "index": 1}}
    assert "derived from the pod environment" in capsys.readouterr().err


def test_launcher_keeps_a_tf_config_set_by_the_training_operator(monkeypatch, captured_exec):
    operator_config = json.dumps({"cluster": {"worker": ["w-0:2222", "w-1:2222"]}, "task": {"type": "worker", "index": 0}})
    monkeypatch.setenv("TF_CONFIG", operator_config)
    monkeypatch.delenv("SPADE_NUM_WORKERS", raising=False)
    cluster.main(["train", "--", "--config", "synthetic"])
    [(_, argv, env)] = captured_exec
    assert env["TF_CONFIG"] == operator_config
    assert argv[3:] == ["--config", "synthetic"]


@pytest.mark.parametrize("tf_config, message", [("{not json", "not JSON"), ('{"task": {}}', "'cluster'")])
def test_launcher_refuses_a_broken_tf_config(monkeypatch, captured_exec, capsys, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    assert cluster.main(["train", "--", "--config", "synthetic"]) == 2
    assert message in capsys.readouterr().err
    assert captured_exec == []


def test_launcher_exits_2_naming_a_missing_variable(monkeypatch, captured_exec, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for name in ("SPADE_NUM_WORKERS", "SPADE_WORKER_ADDRESSES", "SPADE_WORKER_ADDRESS_TEMPLATE", "POD_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "0")
    assert cluster.main(["train", "--", "--config", "synthetic"]) == 2
    assert "SPADE_NUM_WORKERS is not set" in capsys.readouterr().err
    assert captured_exec == []


def test_tf_config_command_prints_the_derived_config(monkeypatch, capsys):
    for name, value in pod_env(0, 2).items():
        monkeypatch.setenv(name, value)
    assert cluster.main(["tf-config"]) == 0
    assert json.loads(capsys.readouterr().out)["cluster"]["worker"][1] == "spade-train-1.spade-train.ml.svc:2222"


def _launch_env(**variables):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG" and not k.startswith("SPADE_WORKER")}
    env.update(variables, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO_ROOT))
    return env


def test_launcher_really_replaces_itself_with_train_py():
    env = _launch_env(**pod_env(0, 1))
    result = subprocess.run([sys.executable, "-m", "spade_tf.cluster", "train", "--", "--help"], env=env,
                            capture_output=True, text=True, timeout=60, cwd=tempfile.gettempdir())
    assert result.returncode == 0, result.stderr
    assert "--fresh" in result.stdout  # train.py's own help
    assert '"task": {"type": "worker", "index": 0}' in result.stderr


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# Smaller than helpers.TINY on purpose: two training processes share the machine's 2 cores here.
TWO_WORKERS = [*TINY, "model.ngf=4", "data.crop_size=32", "data.load_size=32", "train.no_vgg_loss=true"]


def _start_workers(addresses, train_args, log_dir: pathlib.Path, tag):
    """Starts one launcher per worker, as the indexed Job's pods would run it, each with a TMPDIR of its own;
    `train_args(index)` gives a worker's arguments. -> [(process, log path)]."""
    workers = []
    for index in range(len(addresses)):
        tmp = log_dir / f"{tag}-tmp{index}"
        tmp.mkdir()
        env = _launch_env(**pod_env(index, len(addresses)), SPADE_WORKER_ADDRESSES=",".join(addresses), TMPDIR=str(tmp))
        path = log_dir / f"{tag}-worker{index}.log"
        with open(path, "w") as log:
            workers.append((subprocess.Popen([sys.executable, "-m", "spade_tf.cluster", "train", "--",
                                              *train_args(index)],
                                             env=env, stdout=log, stderr=subprocess.STDOUT, cwd=log_dir), path))
    return workers


def _wait_workers(workers, codes, timeout=420):
    """Waits for every worker; asserts their exit codes are `codes`; returns their logs."""
    try:
        found = [p.wait(timeout=timeout) for p, _ in workers]
    finally:
        for p, _ in workers:
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = [path.read_text(errors="replace") for _, path in workers]
    assert found == codes, "\n\n".join(log[-3000:] for log in logs)
    return logs


def _finished_line(log):
    return next(line.split("finished at step", 1)[1] for line in log.splitlines() if "finished at step" in line)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_two_workers_on_loopback_train_in_sync_stop_together_on_one_sigterm_and_resume(tmp_path):
    """The launcher starts both workers, each with a checkpoint folder of its own: only the chief writes
    (checkpoints, samples, logs). SIGTERM to worker 1 at a random moment after the first step: both save one
    checkpoint together and exit 42. The restarted pair (new addresses, as replaced pods; the chief's folder
    now shared, as the pods' volume) resumes it, and both finish with the same global losses."""
    from spade_tf.training.preemption import EXIT_CODE

    addresses = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    checkpoints, other = tmp_path / "checkpoints", tmp_path / "worker1-checkpoints"
    args = ["--config", "synthetic", "name=mw", *TWO_WORKERS, "train.log_every_steps=1", "train.sample_every_steps=1",
            "train.preemption_grace_seconds=300"]
    workers = _start_workers(addresses, lambda i: [*args, f"train.checkpoints_dir={other if i else checkpoints}",
                                                   "train.max_steps=100000"], tmp_path, "first")
    try:
        deadline = time.monotonic() + 900  # a loaded machine traces the first step slowly
        while not all("step 1 done" in path.read_text(errors="replace") for _, path in workers):
            assert time.monotonic() < deadline and all(p.poll() is None for p, _ in workers), \
                "\n\n".join(path.read_text(errors="replace")[-3000:] for _, path in workers)
            time.sleep(0.2)
        time.sleep(random.uniform(0, 3))
        signalled = time.monotonic()
        workers[1][0].send_signal(signal.SIGTERM)
        logs = _wait_workers(workers, [EXIT_CODE, EXIT_CODE], timeout=400)
    finally:
        for p, _ in workers:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert time.monotonic() - signalled < 300
    for index, log in enumerate(logs):
        assert f'"task": {{"type": "worker", "index": {index}}}' in log
        assert "MultiWorkerMirroredStrategy with 2 replica(s) in sync" in log
    assert "another worker was signalled" in logs[0] and "SIGTERM received" in logs[1]
    run = checkpoints / "mw"
    saved = [int(p.name[5:-6]) for p in run.glob("ckpt-*.index")]
    assert len(saved) == 1 and saved[0] >= 1, saved
    for log in logs:
        assert f"stopped by SIGTERM after step {saved[0]}" in log
    assert (run / "config.yaml").is_file() and (run / "samples" / "step_1.png").is_file()
    assert list(run.glob("logs/events.*"))
    assert not list(other.rglob("*")), f"the non-chief wrote {list(other.rglob('*'))[:5]}"
    assert not list((tmp_path / "first-tmp1").iterdir()), "the non-chief's temporary checkpoint folder was left behind"

    addresses = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    logs = _wait_workers(_start_workers(addresses, lambda i: [*args, f"train.checkpoints_dir={checkpoints}",
                                                              f"train.max_steps={saved[0] + 1}"], tmp_path, "second"),
                         [0, 0], timeout=900)
    for log in logs:
        assert re.search(rf"resuming \S+ckpt-{saved[0]} at step {saved[0]} ", log), log[-3000:]
        assert f"finished at step {saved[0] + 1}" in log
    assert (run / f"ckpt-{saved[0] + 1}.index").exists()
    assert not list((tmp_path / "second-tmp1").iterdir()), "the non-chief's temporary checkpoint folder was left behind"
    losses = [_finished_line(log).split("; checkpoint")[0] for log in logs]
    assert losses[0] == losses[1], losses  # both workers reduce the same global losses
