import types

import pytest
import tensorflow as tf

from spade_tf.training import strategy as placement


def _train(**kw):
    defaults = dict(distribute="auto", jit_compile="auto", mixed_precision="off")
    return types.SimpleNamespace(**{**defaults, **kw})


class _FakeStrategy:
    """Stands in for a strategy's device list and replica count."""

    def __init__(self, devices, replicas):
        self.extended = types.SimpleNamespace(worker_devices=devices)
        self.num_replicas_in_sync = replicas


def test_auto_without_tf_config_or_gpus_is_the_default_strategy(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    s = placement.make_strategy(_train())
    assert s is tf.distribute.get_strategy()
    assert placement.devices(s) == ["/CPU:0"] and placement.is_chief(s)


def test_multiworker_without_tf_config_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        placement.make_strategy(_train(distribute="multiworker"))


def test_xla_auto_is_off_on_cpu_and_on_on_gpus():
    cpu, gpus = _FakeStrategy(["/cpu:0"], 1), _FakeStrategy(["/gpu:0", "/gpu:1"], 2)
    use, why = placement.choose_jit(_train(), cpu)
    assert not use and "0.47 of the bf16 rate" in why and "shared/" not in why  # the measured fact, not a path
    assert placement.choose_jit(_train(), gpus)[0]
    assert not placement.choose_jit(_train(jit_compile="off"), gpus)[0]
    assert placement.choose_jit(_train(jit_compile="on"), cpu)[0]


def test_xla_is_never_used_across_cpu_replicas_even_when_asked():
    use, why = placement.choose_jit(_train(jit_compile="on"), _FakeStrategy(["/cpu:0", "/cpu:1"], 2))
    assert not use and "asked for" in why and "several CPU replicas" in why


def test_mixed_precision_is_bfloat16_on_cpu_and_float16_on_gpu():
    assert placement.mixed_policy(_train(), _FakeStrategy(["/cpu:0"], 1)) is None
    assert placement.mixed_policy(_train(mixed_precision="on"), _FakeStrategy(["/cpu:0"], 1)) == "mixed_bfloat16"
    assert placement.mixed_policy(_train(mixed_precision="on"), _FakeStrategy(["/gpu:0"], 1)) == "mixed_float16"



def test_chief_is_worker_0_without_a_chief_task():
    def fake(task_type, task_id, cluster):
        resolver = types.SimpleNamespace(
            task_type=task_type, task_id=task_id,
            cluster_spec=lambda: tf.train.ClusterSpec(cluster),
        )
        return types.SimpleNamespace(cluster_resolver=resolver)

    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    assert placement.is_chief(fake("worker", 0, workers))
    assert not placement.is_chief(fake("worker", 1, workers))
    with_chief = {"chief": ["127.0.0.1:0"], **workers}
    assert placement.is_chief(fake("chief", 0, with_chief))
    assert not placement.is_chief(fake("worker", 0, with_chief))
