"""The painting page's command line (`python -m serving.studio`, serving/studio/__main__.py) in a
subprocess, against the embedded model server on a stand-in export."""

import os
import pathlib
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np

from helpers.standin_model import palette as standin_palette
from helpers.standin_model import seeded_noise
from helpers.studio import SKY, WATER, decode, png

REPO = pathlib.Path(__file__).resolve().parents[1]


def _read_line(stream, timeout):
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        if select.select([stream], [], [], 0.2)[0]:
            chunk = os.read(stream.fileno(), 1)
            if not chunk:
                break
            line += chunk
    return line.decode()


def _multipart(fields):
    boundary = "studio-test-boundary"
    body = b""
    for name, (filename, content) in fields.items():
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_command_line_serves_the_page_without_the_model_code(model_server, standin_export, tmp_path):
    """`python -m serving.studio` prints its address and synthesizes through gRPC only: it has nothing
    but labels.json on disk, and never imports spade_tf, TensorFlow or the model-serving side of `serving`."""
    labels_only = tmp_path / "labels.json"
    shutil.copy(standin_export / "1" / "assets.extra" / "labels.json", labels_only)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    stderr_path = tmp_path / "stderr.txt"  # a file: -X importtime writes more than a pipe holds
    with open(stderr_path, "wb") as stderr_file:
        process = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "serving.studio", "--server", model_server, "--model", "spade",
             "--labels_json", str(labels_only), "--port", "0", "--timeout", "5"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr_file)
    try:
        line = _read_line(process.stdout, 90)
        assert "open http://127.0.0.1:" in line, line
        url = line.split("open ")[1].split()[0]
        labels = np.zeros((64, 64), np.uint8)
        labels[:20] = SKY
        labels[40:, 10:30] = WATER
        body, content_type = _multipart({"layout": ("layout.png", png(labels)), "seed": (None, b"7")})
        request = urllib.request.Request(url + "api/synthesize", data=body, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=30) as response:
            image = decode(response.read())
        np.testing.assert_array_equal(image, standin_palette(8)[labels] + seeded_noise(7, 64, 64))
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    stderr = stderr_path.read_text()
    assert process.returncode == 0, stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}
    assert "serving.studio.app" in imported and "flask" in imported
    model_code = sorted(m for m in imported if m.split(".")[0] == "spade_tf"
                        or m in ("serving.server", "serving.servables", "serving.predict", "serving.batching"))
    assert model_code == [], f"the studio imported model code: {model_code}"
    tensorflow = sorted(m for m in imported if m.split(".")[0] in ("tensorflow", "tensorflow_serving", "keras"))
    assert tensorflow == [], f"the studio's process imported TensorFlow: {tensorflow[:5]}"


def test_command_line_errors():
    result = subprocess.run([sys.executable, "-m", "serving.studio", "--labels_json", "/nonexistent/labels.json"],
                            cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 2 and "cannot read labels from /nonexistent/labels.json" in result.stderr
