"""The batches a Trainer feeds its replicas, recorded for the resume tests.

Run as a script (`python tests/fed_batches.py <folder>`), it trains with MirroredStrategy on 2
logical CPUs uninterrupted, then stopped and resumed, and prints OK when both runs fed every
replica the same batches at every step.
"""

import hashlib
import sys

import tensorflow as tf


def record_fed_batches(trainer) -> dict:
    """Replaces the trainer's G and D updates by a recorder; returns the dict it fills as the
    trainer runs: {(step, replica): SHA-1 of the replica's batch}."""
    fed = {}

    def record(step, replica, *tensors):
        digest = hashlib.sha1(b"".join(t.numpy().tobytes() for t in tensors)).hexdigest()
        fed[int(step), int(replica)] = digest
        return 0.0

    def replica_step(batch, train_generator=True):
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        tensors = [batch[k] for k in sorted(batch)]
        done = tf.py_function(record, [trainer.step, tf.convert_to_tensor(replica), *tensors], tf.float32)
        return {"D_Fake": done, "D_real": done}

    trainer.replica_step = replica_step
    return fed


def train_recorded(cfg) -> dict:
    """Trains `cfg` (resuming its run folder if it holds a checkpoint) and returns the fed batches."""
    from spade_tf.training.trainer import Trainer

    trainer = Trainer(cfg)
    fed = record_fed_batches(trainer)
    trainer.train()
    return fed


def resume_overrides(tmp_dir, *extra):
    """A tiny run whose data epoch (3 global batches of 2) is shorter than the steps it takes."""
    return [f"train.checkpoints_dir={tmp_dir}", "model.ngf=4", "model.ndf=4", "data.crop_size=32",
            "data.load_size=32", "data.synthetic_size=6", "train.batch_size=2", "train.steps_per_epoch=4",
            "train.sample_every_steps=1000", "train.log_every_steps=1000", *extra]


if __name__ == "__main__":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from spade_tf.config import load_config

    def config(name, steps):  # global batch 4: a step takes both of the pipeline's 2-sample batches
        overrides = resume_overrides(sys.argv[1], "train.distribute=mirrored", "train.batch_size=4",
                                     "data.synthetic_size=10", f"name={name}", f"train.max_steps={steps}")
        return load_config("synthetic", overrides)

    uninterrupted = train_recorded(config("uninterrupted", 7))
    first = train_recorded(config("resumed", 3))
    resumed = train_recorded(config("resumed", 7))
    assert set(uninterrupted) == {(s, r) for s in range(7) for r in range(2)}, sorted(uninterrupted)
    assert set(first) == {(s, r) for s in range(3) for r in range(2)}, sorted(first)
    assert {**first, **resumed} == uninterrupted, (first, resumed, uninterrupted)
    assert len(set(uninterrupted.values())) > 5  # the batches differ, so the comparison can fail
    print("OK")
