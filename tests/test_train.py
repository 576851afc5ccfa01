"""train.py as a command: a bad config value is a clear error. Its runs end to end are tested where their
behaviour is: two workers on loopback in tests/test_cluster.py, SIGTERM, SIGINT and SIGKILL with resumes in
tests/test_preemption.py."""

import os
import pathlib
import subprocess
import sys

from helpers import TINY  # as overrides on train.py's command line

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_bad_config_value_is_a_clear_error(tmp_path):
    preset = REPO / "configs" / "synthetic.yaml"
    result = subprocess.run([sys.executable, str(REPO / "train.py"), "--config", str(preset), *TINY,
                             "train.gan_mode=hinj", f"train.checkpoints_dir={tmp_path}"], cwd=tmp_path,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, text=True, capture_output=True, timeout=600)
    assert result.returncode != 0 and "train.gan_mode" in result.stderr and "hinge" in result.stderr
