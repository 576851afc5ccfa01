import os
import subprocess
import sys
import pathlib

HERE = pathlib.Path(__file__).parent


def test_models_build_and_sync_batch_norm_under_mirrored_strategy():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, str(HERE / "distribute_build.py")], capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr[-3000:]
