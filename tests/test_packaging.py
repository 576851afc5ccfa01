"""Installed distributions: the light client (client/, without TensorFlow) and `pip install .` of spade-tf.

Both install into fresh virtual environments with pip's normal resolver; the package index (or pip's
cache) provides what is missing. The spade-tf install reuses this interpreter's TensorFlow (a .pth file
adds its site-packages) so that CI does not download it again.
"""

import os
import pathlib
import re
import signal
import subprocess
import sys
import sysconfig
import time

import numpy as np
import pytest
from PIL import Image

from helpers.standin_model import palette, seeded_noise, write_standin_model

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def make_venv(folder, *, reuse_site_packages=False):
    """A fresh venv; with `reuse_site_packages`, this interpreter's packages are visible in it too."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
    python = folder / "bin" / "python"
    if reuse_site_packages:
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
        (pathlib.Path(site) / "spade_tf_reuse.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def pip_install(python, *args):
    result = subprocess.run([str(python), "-m", "pip", "install", "-q", *map(str, args)], capture_output=True,
                            text=True, timeout=1200, env=clean_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def source_copy(folder, *parts):
    """The parts of the checkout a build needs, copied to `folder` (setuptools builds in the source tree)."""
    import shutil

    ignore = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    for part in parts:
        source, target = REPO / part, folder / part
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore, symlinks=False)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    return folder


def clean_env(**extra):
    """The environment without this checkout on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory):
    """A venv with only the light client installed from client/, at the tested pins."""
    root = tmp_path_factory.mktemp("light")
    python = make_venv(root / "venv")
    pip_install(python, source_copy(root / "src", "client") / "client", "-c", REPO / "requirements.txt")
    return python


LIGHT_SCRIPT = """
import sys, time
start = time.perf_counter()
from spade_tf_client import SpadeClient
imported = time.perf_counter()
import numpy as np
address, rest, out = sys.argv[1:4]
labels = np.broadcast_to(np.repeat(np.arange(4), 8), (32, 32)).astype(np.uint8)
with SpadeClient(address, timeout=60) as client:
    image = client.synthesize(labels, seed=9)
    status = client.status()
with SpadeClient(rest, timeout=60) as client:
    assert (client.synthesize(labels, seed=9) == image).all() and client.status() == status
np.save(out, image)
assert "tensorflow" not in sys.modules, "the light client imported TensorFlow"
try:
    import tensorflow
except ModuleNotFoundError:
    pass
else:
    raise AssertionError("tensorflow is installed in the light client's environment")
print(f"import {imported - start:.3f} s, first answer {time.perf_counter() - start:.3f} s")
"""


def test_light_client_needs_no_tensorflow(light_venv, tmp_path):
    import tensorflow as tf

    from serving.server import ModelServer

    requirements = subprocess.run([str(light_venv), "-m", "pip", "list", "--format=freeze"], capture_output=True,
                                  text=True, check=True).stdout
    installed = {line.split("==")[0].lower() for line in requirements.split()}
    assert "spade-tf-client" in installed and not installed & {"tensorflow", "keras", "tensorflow-serving-api"}

    base = tmp_path / "spade"
    version = write_standin_model(base, 1)
    server = ModelServer(model_base_path=str(base), port=0, rest_api_port=_free_port(), file_system_poll_wait_seconds=0)
    port = server.start()
    try:
        out = tmp_path / "image.npy"
        result = subprocess.run([str(light_venv), "-c", LIGHT_SCRIPT, f"127.0.0.1:{port}",
                                 f"http://127.0.0.1:{server.rest_api_port}", str(out)],
                                cwd=tmp_path, capture_output=True, text=True, timeout=300, env=clean_env())
        assert result.returncode == 0, result.stderr[-3000:]
        print(result.stdout)
        labels = np.broadcast_to(np.repeat(np.arange(4), 8), (32, 32)).astype(np.uint8)
        in_process = tf.saved_model.load(str(version)).signatures["with_seed"](
            label_map=tf.constant(labels[None]), seed=tf.constant([9], tf.int64))["image"].numpy()[0]
        image = np.load(out)
        assert image.dtype == np.uint8 and image.tobytes() == in_process.tobytes()
        np.testing.assert_array_equal(image, palette(4)[labels] + seeded_noise(9, 32, 32))

        Image.fromarray(labels).save(tmp_path / "labels.png")
        command = light_venv.parent / "spade-tf-client"
        result = subprocess.run([str(command), "--server", f"127.0.0.1:{port}", "--label", "labels.png",
                                 "--out", "cli.png", "--seed", "9"], cwd=tmp_path, capture_output=True, text=True,
                                timeout=300, env=clean_env())
        assert result.returncode == 0, result.stderr
        assert np.asarray(Image.open(tmp_path / "cli.png")).tobytes() == in_process.tobytes()
    finally:
        server.stop(0)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_installed_package_commands_work_from_an_empty_folder(tmp_path):
    python = make_venv(tmp_path / "venv", reuse_site_packages=True)
    source = source_copy(tmp_path / "src", "pyproject.toml", "README.md", "requirements.txt", "configs", "spade_tf",
                         "serving", "client/spade_tf_client")
    pip_install(python, source)  # not editable: a wheel built from the checkout's files
    bin_dir = python.parent
    work = tmp_path / "empty"
    work.mkdir()
    env = clean_env()

    def run(command, *args, timeout=900):
        result = subprocess.run([str(bin_dir / command), *map(str, args)], cwd=work, capture_output=True,
                                text=True, timeout=timeout, env=env)
        assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}{result.stderr[-3000:]}"
        return result

    where = subprocess.run([str(python), "-c", "import spade_tf, spade_tf_client; print(spade_tf.__file__)"],
                           cwd=work, capture_output=True, text=True, env=env, check=True).stdout
    assert str(REPO) not in where and "site-packages" in where
    run("spade-tf-train", "--config", "synthetic", "name=tiny", "model.ngf=8", "model.ndf=8", "train.batch_size=1",
        "train.max_steps=2", "train.save_every_steps=2", "train.sample_every_steps=100", "train.log_every_steps=1")
    run("spade-tf-export", "--run_dir", "checkpoints/tiny", "export.warmup_requests=0")
    assert (work / "exports" / "spade" / "1" / "assets.extra" / "labels.json").is_file()
    for command in ("spade-tf-studio", "spade-tf-generate", "spade-tf-import-nvlabs"):
        assert "usage" in run(command, "--help").stdout
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(work / "layout.png")
    serve = subprocess.Popen([str(bin_dir / "spade-tf-serve"), "--model_base_path", "exports/spade", "--port", "0"],
                             cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        port = _served_port(serve)
        run("spade-tf-client", "--server", f"127.0.0.1:{port}", "--model_base_path", "exports/spade",
            "--label", "layout.png", "--instance", "layout.png", "--out", "image.png", "--seed", "1")
        assert Image.open(work / "image.png").size == (64, 64)
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
        serve.stdout.close()


def _served_port(process, timeout=600):
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        found = re.search(r"Running gRPC ModelServer at [^:]+:(\d+)", line)
        if found:
            return int(found.group(1))
    raise AssertionError("spade-tf-serve did not start:\n" + "".join(lines[-40:]))
