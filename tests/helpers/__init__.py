"""The tests' shared helpers, one package imported under one name: `helpers` (tests/ is on sys.path
when pytest runs; the scripts run as subprocesses sit in tests/ too).

- here: `require_shared` (material outside the repository), the tiny configs (`TINY`,
  `tiny_config`), the tiny model trained once per session (`train_tiny_model`, `layout_miou`);
- `helpers.model_test_base`: the checks every layer and model goes through (keras-hub style);
- `helpers.pth`: `.pth` files written the way torch.save writes them, without torch;
- `helpers.standin_model`: a tiny SavedModel that follows the export contract, for serving tests;
- `helpers.standin_graph`: a tiny graph laid out like the 2015 Inception graph, for FID tests.

Fixtures that use these are in tests/conftest.py.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from spade_tf.config import load_config
from spade_tf.shared import shared_dir

if __name__ != "helpers":  # imported as tests.helpers too, its modules would load twice (two caches)
    raise ImportError(f"import the test helpers as `helpers`, not `{__name__}`")


def require_shared(relative: str) -> pathlib.Path:
    """A path inside the material outside the repository ($SPADE_SHARED); skips with the reason when
    absent (fails under CI=true)."""
    path = shared_dir() / relative
    if not path.exists():
        message = f"shared material {path} not found (set SPADE_SHARED to the shared folder)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_script(name, *args, timeout=600) -> str:
    """Runs tests/<name> in a fresh Python process (for what can be set up only once per process, such
    as logical devices) and checks that it printed OK; returns its output."""
    script = pathlib.Path(__file__).resolve().parents[1] / name
    result = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr[-4000:]
    return result.stdout


# --- tiny configs --------------------------------------------------------------------------------

# The tests' tiny SPADE: the built-in data at its own 64x64, narrow networks, batch 2, a log line
# per step. A test that needs something else adds overrides and says why.
TINY = ("model.ngf=8", "model.ndf=8", "train.batch_size=2", "train.log_every_steps=1")


def tiny_config(*overrides, preset="synthetic", checkpoints_dir=None):
    """`preset` (default: the built-in data) with TINY, then `overrides`; runs go to `checkpoints_dir`."""
    where = [f"train.checkpoints_dir={checkpoints_dir}"] if checkpoints_dir is not None else []
    return load_config(preset, [*TINY, *where, *overrides])


# --- the tiny model trained once per session -----------------------------------------------------

TINY_STEPS = 200
# Differs from TINY on purpose: the README quotes this model's quality (mIoU 0.03 -> 0.66), so it
# keeps the preset's ngf 16 and batch 4 and trains long enough to learn, with a moving average.
TINY_MODEL = (
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


def train_tiny_model(tmp_dir) -> pathlib.Path:
    """Trains the tiny model into `<tmp_dir>/tiny` (resuming if it is there) and returns that folder
    (about 200 steps at 64x64; minutes on 2 cores)."""
    from spade_tf.training.trainer import Trainer  # loads TensorFlow: only the tests that train pay

    return Trainer(load_config("synthetic", [*TINY_MODEL, f"train.checkpoints_dir={tmp_dir}"])).train()


def layout_miou(cfg, generator, num_samples=16) -> float:
    """mIoU of `generator`'s images of held-out layouts (the val split) against those layouts, with the
    built-in data's reference segmenter."""
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
