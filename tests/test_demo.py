"""The README's main job (spade_tf/commands/demo.py, which scripts/demo.sh runs), run as a user runs it
(with few training steps)."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow
REPO = pathlib.Path(__file__).resolve().parents[1]
DEMO = ["-m", "spade_tf.commands.demo"]


def test_demo_trains_exports_serves_and_writes_the_picture(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, *DEMO, "--steps", "3", "--out", str(tmp_path), "model.ngf=8"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for step in ("[1/4] training", "[2/4] exporting", "[3/4] starting", "[4/4] querying"):
        assert step in result.stdout
    image = np.asarray(Image.open(tmp_path / "generated.png"))
    assert image.shape == (64, 64, 3) and image.std() > 0
    assert (tmp_path / "exports" / "spade" / "1" / "saved_model.pb").exists()
    # run twice: the training run resumes (already done), a new version is exported and served
    again = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "exports" / "spade" / "2" / "saved_model.pb").exists()


def test_demo_refuses_other_datasets(tmp_path):
    result = subprocess.run([sys.executable, *DEMO, "--config", "cityscapes", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "built-in data" in result.stderr


def test_demo_refuses_a_step_count_below_one(tmp_path):
    result = subprocess.run([sys.executable, *DEMO, "--steps", "0", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "positive number of steps" in result.stderr


def test_the_demo_script_runs_demo_py():
    """scripts/demo.sh, the README's first command, runs this file."""
    script = (REPO / "scripts" / "demo.sh").read_text()
    assert "python -m spade_tf.commands.demo" in script
