"""Run as a script (logical devices can be set up only once per process, before TF starts):
one training step under MirroredStrategy on 2 logical CPUs against the same step on one device at
the same global batch. Checks equal losses and updated weights, and batch-norm moving statistics
identical on both replicas; then a VAE + EMA step on two replicas. Prints OK on success."""

import sys

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from spade_tf.config import load_config  # noqa: E402
from spade_tf.data import pipeline  # noqa: E402
from spade_tf.training.trainer import Trainer  # noqa: E402

overrides = ["model.ngf=8", "model.ndf=8", "train.batch_size=2",
             "train.steps_per_epoch=4", f"train.checkpoints_dir={sys.argv[1]}"]
mirrored = Trainer(load_config("synthetic", overrides + ["train.distribute=mirrored"]))
single = Trainer(load_config("synthetic", overrides + ["train.distribute=none"]))
assert mirrored.strategy.num_replicas_in_sync == 2, mirrored.strategy.num_replicas_in_sync
assert single.strategy.num_replicas_in_sync == 1
assert not mirrored.jit
for name in ("generator", "discriminator"):
    getattr(single, name).set_weights(getattr(mirrored, name).get_weights())

batch = next(iter(pipeline.build_dataset(single.cfg)))  # one global batch of 2 samples
iterator = iter(mirrored.strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch)))
got = mirrored.run_step(iterator)  # each replica gets one sample
want = {k: float(v) for k, v in single.replica_step(batch).items()}
print("2 replicas:", got)
print("1 device:  ", want)
failures = []
for k in want:
    if not np.isclose(got[k], want[k], rtol=1e-4, atol=1e-5):
        failures.append(f"loss {k}: {got[k]} vs {want[k]}")


def replica_values(variable):
    return [np.array(v) for v in mirrored.strategy.experimental_local_results(variable.value)]


bn_layers = [v for v in mirrored.generator.non_trainable_variables if "moving" in v.path]
assert bn_layers, "no batch-norm statistics in the generator"
for v in bn_layers:
    first, second = replica_values(v)
    if not np.array_equal(first, second):
        failures.append(f"{v.path} differs between replicas (max diff {np.abs(first - second).max()})")
    if np.allclose(first, 0) or np.allclose(first, 1):
        failures.append(f"{v.path} did not move")

# Adam's first step moves each weight by about +-lr (the sign of its gradient): the updates must
# agree except for weights whose gradient is at float-rounding level. Biases are left out: most of
# them feed a normalisation (a conv's bias before SPADE's batch norm), so their true gradient is zero
# and their update is the sign of rounding noise. How many kernel weights sit at rounding level
# depends on the CPU's kernels: 0.1 % on AMD EPYC (Zen 4), 1.1 % (at most 2.8 % of one variable) on an
# Intel Xeon with AVX-512 (measured). A step that used one replica's gradient instead of the global
# batch's flips a large share: the two samples' gradients disagree in sign for many weights. (At 32x32 the first blocks work on 1x1 maps, where batch norm over
# 2 values amplifies rounding: hence 64x64.)
for name in ("generator", "discriminator"):
    pairs = [(a, b) for a, b in zip(getattr(mirrored, name).trainable_variables,
                                    getattr(single, name).trainable_variables) if len(a.shape) > 1]
    diffs = np.concatenate([np.abs(np.array(a) - np.array(b)).ravel() for a, b in pairs])
    flipped = np.mean(diffs > 1e-6)
    print(f"{name}: {flipped:.2%} of {diffs.size} kernel weights updated differently (max diff {diffs.max():.3g})")
    if flipped > 0.03:
        failures.append(f"{name}: {flipped:.2%} of the kernel weights were updated differently")

# VAE (z drawn per replica inside the step) and the EMA generator (updated in replica context) also
# run on two replicas and keep their copies identical.
# (One strategy per process: two MirroredStrategy objects would reuse each other's collective keys.)
vae = Trainer(load_config("synthetic", overrides + ["model.use_vae=true", "train.ema_decay=0.5"]),
              strategy=mirrored.strategy)
vae_logs = vae.run_step(iter(vae.distributed_dataset()))
if not all(np.isfinite(v) for v in vae_logs.values()) or "KLD" not in vae_logs:
    failures.append(f"VAE step losses: {vae_logs}")
for v in vae.ema_generator.weights + vae.encoder.weights:
    first, second = [np.array(x) for x in vae.strategy.experimental_local_results(v.value)]
    if not np.array_equal(first, second):
        failures.append(f"{v.path} differs between replicas")

if failures:
    print("FAIL\n" + "\n".join(failures))
    sys.exit(1)
print(f"OK: {len(bn_layers)} batch-norm statistics in sync")
