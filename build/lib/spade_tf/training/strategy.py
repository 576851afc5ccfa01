"""Where a run executes: the tf.distribute strategy, XLA on or off, and the mixed-precision policy.

`train.distribute`:
- `auto`: MultiWorkerMirroredStrategy when TF_CONFIG is set, MirroredStrategy over all GPUs
  when there are several, else the default (single-device) strategy;
- `none`: the default strategy; `mirrored`: MirroredStrategy over all GPUs, or over all logical
  CPU devices when there is no GPU; `multiworker`: MultiWorkerMirroredStrategy (needs TF_CONFIG).
The multi-worker strategy must be created before TensorFlow runs anything else in the process.
"""

import contextlib
import json
import logging
import os

import keras
import tensorflow as tf

log = logging.getLogger(__name__)

CPU_XLA_REASON = (
    "on this CPU XLA slows SPADE's large convolutions (0.91-0.93 of the non-XLA fp32 rate) and cancels "
    "the bfloat16 gain (0.47 of the bf16 rate), see shared/reference/cpu_performance.md"
)
MULTI_CPU_XLA_REASON = (
    "TensorFlow cannot compile a step across several CPU replicas (InvalidArgumentError or a merge_call "
    "RuntimeError from synchronized batch norm, shared/reference/tf_stack_notes.md sections 3-4)"
)


def make_strategy(train_cfg) -> tf.distribute.Strategy:
    mode = train_cfg.distribute
    has_tf_config = bool(json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster"))
    gpus = tf.config.list_physical_devices("GPU")
    if mode == "multiworker" or (mode == "auto" and has_tf_config):
        if not has_tf_config:
            raise ValueError(
                "train.distribute=multiworker needs TF_CONFIG with a cluster, e.g. "
                '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}'
            )
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.NCCL
            if gpus
            else tf.distribute.experimental.CommunicationImplementation.RING
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if mode == "mirrored" or (mode == "auto" and len(gpus) > 1):
        if gpus:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
    if mode not in ("auto", "none"):
        raise ValueError(f"train.distribute must be auto, none, mirrored or multiworker; got {mode!r}")
    return tf.distribute.get_strategy()


def devices(strategy):
    """The local devices the strategy's replicas run on (the default strategy: the first GPU, else the CPU)."""
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return ["/GPU:0" if tf.config.list_physical_devices("GPU") else "/CPU:0"]
    return list(strategy.extended.worker_devices)


def on_gpus(strategy) -> bool:
    return all("GPU" in device.upper() for device in devices(strategy))


def is_chief(strategy) -> bool:
    """True unless this process is a non-chief worker of a multi-worker run."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def describe(strategy) -> str:
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        name = "MultiWorkerMirroredStrategy"
    elif isinstance(strategy, tf.distribute.MirroredStrategy):
        name = "MirroredStrategy"
    else:
        name = "the default strategy"
    return (f"{name} with {strategy.num_replicas_in_sync} replica(s) in sync "
            f"(local devices: {', '.join(devices(strategy))})")


def choose_jit(train_cfg, strategy):
    """(use XLA, why) from `train.jit_compile` (auto | on | off) and the devices."""
    gpu = on_gpus(strategy)
    several = strategy.num_replicas_in_sync > 1
    if train_cfg.jit_compile == "off":
        return False, "XLA off: train.jit_compile=off"
    if not gpu and several:
        asked = "asked for with train.jit_compile=on, but " if train_cfg.jit_compile == "on" else ""
        return False, f"XLA off: {asked}{MULTI_CPU_XLA_REASON}"
    if train_cfg.jit_compile == "on":
        return True, "XLA on: train.jit_compile=on"
    if gpu:
        return True, "XLA on: the step runs on GPUs (train.jit_compile=auto)"
    return False, f"XLA off (train.jit_compile=auto): {CPU_XLA_REASON}; set train.jit_compile=on to force it"


def mixed_policy(train_cfg, strategy):
    """The Keras dtype policy for `train.mixed_precision`: None (float32), mixed_float16 on GPU,
    mixed_bfloat16 on CPU."""
    if train_cfg.mixed_precision != "on":
        return None
    return "mixed_float16" if on_gpus(strategy) else "mixed_bfloat16"


@contextlib.contextmanager
def dtype_policy(policy):
    """Builds layers under `policy` (None: float32), restoring the previous global policy after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy or "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
