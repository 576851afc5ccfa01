"""A tiny SPADE trained on the built-in data, shared by the tests that need a trained model.

`train_tiny_model(tmp_dir)` trains it (about 200 steps at 64x64; minutes on 2 cores) and returns
its run folder; `layout_miou` scores how well a generator's images follow their layouts with the
built-in data's reference segmenter.
"""

import pathlib

import numpy as np

TINY_STEPS = 200
TINY_OVERRIDES = (
    "name=tiny",
    "model.ngf=16",
    "model.ndf=16",
    "train.batch_size=4",
    "train.ema_decay=0.95",
    f"train.max_steps={TINY_STEPS}",
    f"train.save_every_steps={TINY_STEPS}",
    "train.sample_every_steps=100",
    "train.log_every_steps=20",
)


def tiny_config(tmp_dir, *overrides):
    from spade_tf.config import load_config

    return load_config("synthetic", [*TINY_OVERRIDES, f"train.checkpoints_dir={tmp_dir}", *overrides])


def train_tiny_model(tmp_dir) -> pathlib.Path:
    """Trains the tiny model into `<tmp_dir>/tiny` (resuming if it is there) and returns that folder."""
    from spade_tf.training.trainer import Trainer

    return Trainer(tiny_config(tmp_dir)).train()


def layout_miou(cfg, generator, num_samples=16) -> float:
    """mIoU of `generator`'s images of held-out layouts (the val split) against those layouts."""
    import tensorflow as tf

    from spade_tf.data import pipeline, segmenter
    from spade_tf.evaluation.segmentation import miou
    from spade_tf.semantics import semantic_input

    batch = next(iter(pipeline.build_dataset(cfg, "val", batch_size=num_samples)))
    d = cfg.data
    semantics = semantic_input(batch["label"], batch.get("instance"), label_nc=d.label_nc,
                               contain_dontcare_label=d.contain_dontcare_label, use_instance=not d.no_instance)
    images = tf.function(lambda s: generator(s, training=False))(semantics).numpy()
    labels = np.asarray(batch["label"])
    return float(miou(segmenter.segment(images), labels, d.label_nc)[0])
