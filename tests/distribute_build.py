"""Run as a script: builds G, D, E under MirroredStrategy on 2 logical CPUs and runs a
training-mode forward pass with different data on each replica. With `spadesyncbatch` the
batch-norm moving statistics must be identical on both replicas; with plain `spadebatch` they
must differ (which shows the check can fail). Prints OK on success."""

import sys

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from spade_tf.config import load_config  # noqa: E402
from spade_tf.models import build_discriminator, build_encoder, build_generator  # noqa: E402

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2


def replica_moving_means(norm_G):
    cfg = load_config("synthetic", ["ngf=4", "ndf=4", "crop_size=32", "load_size=32", "use_vae=true",
                                    f"norm_G={norm_G}"])
    with strategy.scope():
        g, d, e = build_generator(cfg), build_discriminator(cfg), build_encoder(cfg)

    def step(segmap, image):
        mu, _ = e(image, training=True)
        fake = g({"semantics": segmap, "z": mu}, training=True)
        d(tf.concat([segmap, fake], -1), training=True)

    def inputs(ctx):  # different data on each replica
        scale = 1.0 + 3.0 * tf.cast(ctx.replica_id_in_sync_group, tf.float32)
        segmap = tf.random.stateless_uniform((1, 32, 32, cfg.semantic_nc), [1, 2]) * scale
        image = tf.random.stateless_uniform((1, 32, 32, 3), [3, 4]) * scale
        return segmap, image

    segmap = strategy.experimental_distribute_values_from_function(lambda ctx: inputs(ctx)[0])
    image = strategy.experimental_distribute_values_from_function(lambda ctx: inputs(ctx)[1])
    tf.function(lambda s, i: strategy.run(step, args=(s, i)))(segmap, image)
    bn = g.get_layer("up_3").norm_0.param_free_norm
    return [np.asarray(v) for v in strategy.experimental_local_results(bn.moving_mean.value)]


synced = replica_moving_means("spectralspadesyncbatch3x3")
unsynced = replica_moving_means("spectralspadebatch3x3")
if not np.allclose(synced[0], synced[1], atol=1e-6) or np.allclose(synced[0], 0, atol=1e-6):
    print("FAIL: synchronized batch norm statistics differ between replicas or did not move", synced)
    sys.exit(1)
if np.allclose(unsynced[0], unsynced[1], atol=1e-6):
    print("FAIL: the check cannot tell synchronized from local batch norm", unsynced)
    sys.exit(1)
print("OK", synced[0][:3], unsynced[0][:3], unsynced[1][:3])
