"""The studio (serving/studio): its endpoints with a fake client (fast), the command line in a
subprocess against the embedded model server, and the page in headless Chromium.

The browser tests use Debian's chromium and chromium-driver (scripts/install_browser.sh); they skip
with the reason where the browser cannot be installed, and fail instead under CI=true. The test with
a tiny trained model takes a screenshot; with SPADE_UPDATE_SCREENSHOT=1 it replaces the README's
docs/studio.png (otherwise it goes to the test's temporary folder, so tests leave the checkout as it was).
"""

import base64
import io
import json
import os
import pathlib
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc
import numpy as np
import pytest
from PIL import Image

from serving.client import SpadeClientError
from serving.studio import create_app, serve_studio
from serving.studio.app import MAX_UPLOAD_BYTES
from serving_fixtures import palette as standin_palette
from serving_fixtures import seeded_noise, write_standin_model

REPO = pathlib.Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "docs" / "studio.png"
SYNTHETIC_NAMES = ["sky", "mountain", "water", "grass", "tree", "building", "road", "object"]
SKY, MOUNTAIN, WATER, GRASS, TREE, BUILDING, ROAD = range(7)


def png(array, palette=None, fmt="PNG"):
    image = Image.fromarray(np.asarray(array))
    if palette is not None:
        image.putpalette(np.asarray(palette, np.uint8).ravel().tolist())
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def decode(data):
    return np.asarray(Image.open(io.BytesIO(data)))


# ---------- endpoints, with a fake client ----------


def labels_json(**overrides):
    labels = {"model_name": "spade", "class_names": ["sky", "grass", "water", "road"],
              "palette": [[70, 130, 210], [110, 170, 55], [30, 80, 130], [55, 55, 57]], "label_nc": 4,
              "contain_dontcare_label": False, "unknown_label": None, "use_instance": True, "use_vae": False,
              "z_dim": 256, "image_size": [32, 64], "size_multiple": 8, "aspect_ratio": 2.0,
              "signatures": ["serving_default", "with_seed"]}
    return {**labels, **overrides}


class FakeClient:
    """Records the calls; images are palette[label] (+ z[0] for a style code)."""

    address = "fake-server:8500"

    def __init__(self, labels, error=None):
        self.palette = np.asarray(labels["palette"], np.uint8)
        self.error = error
        self.calls = []

    def synthesize(self, label_map, **options):
        self.calls.append(("synthesize", label_map, options))
        if self.error is not None:
            raise self.error
        table = np.concatenate([self.palette, np.zeros((256 - len(self.palette), 3), np.uint8)])
        shift = int(options["z"][0]) if "z" in options else 0
        return table[label_map] + np.uint8(shift)

    def encode_style(self, image):
        self.calls.append(("encode_style", image, {}))
        return np.full((1, 256), 2.0, np.float32)

    def status(self):
        if self.error is not None:
            raise self.error
        return [{"version": 1, "state": "AVAILABLE", "error_code": 0, "error_message": ""}]


def make_app(error=None, **overrides):
    labels = labels_json(**overrides)
    fake = FakeClient(labels, error)
    return create_app(lambda: fake, labels).test_client(), fake


def post(client, route, field="layout", data=b"", filename="layout.png", **form):
    return client.post(route, data={field: (io.BytesIO(data), filename), **form}, content_type="multipart/form-data")


def layout(height=32, width=64):
    labels = np.full((height, width), 1, np.uint8)
    labels[: height // 2] = 0
    labels[height // 2:, width // 2:] = 3
    return labels


def test_page_and_model_config():
    client, _ = make_app()
    page = client.get("/")
    assert page.status_code == 200 and b'<canvas id="layout"' in page.data
    for asset in ("studio.js", "studio.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    model = client.get("/api/model").get_json()
    assert model["class_names"] == ["sky", "grass", "water", "road"] and model["palette"][2] == [30, 80, 130]
    assert model["image_size"] == [32, 64] and model["server"] == "fake-server:8500"
    assert client.get("/api/status").get_json()["ok"] is True


@pytest.mark.parametrize("encoding", ["palette", "grey", "colours"])
def test_synthesize_decodes_the_layout(encoding):
    client, fake = make_app()
    labels = layout()
    colours = np.asarray(labels_json()["palette"], np.uint8)
    data = {"palette": png(labels, palette=colours), "grey": png(labels), "colours": png(colours[labels])}[encoding]
    response = post(client, "/api/synthesize", data=data, seed="42")
    assert response.status_code == 200, response.get_json()
    assert response.headers["Content-Type"] == "image/png"
    np.testing.assert_array_equal(decode(response.data), colours[labels])
    (_, sent, options), = fake.calls
    np.testing.assert_array_equal(sent, labels)
    assert options["seed"] == 42
    np.testing.assert_array_equal(options["instance_map"], labels)  # one instance per class region
    assert options["instance_map"].dtype == np.int32


def test_layout_upload_returns_the_class_indices():
    client, fake = make_app(palette=[[9, 9, 9], [1, 2, 3], [9, 9, 9], [4, 5, 6]])  # class 2's colour repeats 0's
    colours = np.asarray([[9, 9, 9], [1, 2, 3], [9, 9, 9], [4, 5, 6]], np.uint8)
    labels = layout()
    body = post(client, "/api/layout", data=png(colours[labels])).get_json()
    assert (body["height"], body["width"]) == (32, 64)
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(body["labels"]), np.uint8).reshape(32, 64), labels)
    other = np.zeros((64, 128), np.uint8)  # another size with the model's aspect ratio
    other[10:20, 5:50] = 2
    body = post(client, "/api/layout", data=png(other)).get_json()
    assert (body["height"], body["width"]) == (64, 128)
    assert np.frombuffer(base64.b64decode(body["labels"]), np.uint8).reshape(64, 128).tolist() == other.tolist()
    assert fake.calls == []


def _jpeg():
    return png(np.zeros((32, 64, 3), np.uint8), fmt="JPEG")


def _rgba_with_hole():
    rgba = np.concatenate([np.asarray(labels_json()["palette"], np.uint8)[layout()],
                           np.full((32, 64, 1), 255, np.uint8)], -1)
    rgba[3, 4, 3] = 0
    return png(rgba)


BAD_LAYOUTS = {
    "not an image": (b"hello, this is text", "not an image file"),
    "jpeg": (_jpeg(), "must be a PNG file (lossless), got a JPEG"),
    "not a multiple": (png(np.zeros((30, 60), np.uint8)), "the layout is 30 x 60 (height x width) but this model takes "
                                                          "heights and widths that are multiples of 8 (size_multiple "
                                                          "in labels.json), e.g. 32 x 64"),
    "aspect ratio": (png(np.zeros((64, 64), np.uint8)), "for width 64 the height must be 32"),
    "class index": (png(np.where(layout() == 3, 7, layout()).astype(np.uint8)),
                    "the layout holds 7 at [16, 32], but this model takes class indices 0..3 (this model has no "
                    "don't-care label, so 255 is not allowed either)"),
    "unknown label": (png(np.full((32, 64), 255, np.uint8)), "holds 255 at [0, 0]"),
    "colours": (png(np.full((32, 64, 3), 200, np.uint8)), "2048 pixels in 1 colours that are not in the model's "
                                                          "palette of 4 classes: (200, 200, 200): 2048 px, the first "
                                                          "at (x=0, y=0)"),
    "transparent": (_rgba_with_hole(), "transparent pixels"),
    "mode LA": (png(np.zeros((32, 64, 2), np.uint8)), "it is a LA-mode image"),
    "empty": (b"", "the layout file is empty"),
}


@pytest.mark.parametrize("route", ["/api/synthesize", "/api/layout"])
@pytest.mark.parametrize("case", list(BAD_LAYOUTS))
def test_bad_layouts_get_a_message(route, case):
    client, fake = make_app()
    data, message = BAD_LAYOUTS[case]
    response = post(client, route, data=data)
    assert response.status_code == 400
    assert message in response.get_json()["error"]
    assert fake.calls == []


@pytest.mark.parametrize("form, message", [
    ({"seed": "abc"}, "the seed must be a whole number, got 'abc'"),
    ({"seed": str(2**63)}, "the seed must be in"),
    ({"z": json.dumps([0.0] * 256)}, "not a VAE model"),
    ({"seed": "1", "z": "[]"}, "not both"),
])
def test_bad_fields_get_a_message(form, message):
    client, fake = make_app()
    response = post(client, "/api/synthesize", data=png(layout()), **form)
    assert response.status_code == 400 and message in response.get_json()["error"]
    assert fake.calls == []


def test_missing_layout_field():
    client, _ = make_app()
    response = client.post("/api/synthesize", data={"seed": "1"}, content_type="multipart/form-data")
    assert response.status_code == 400 and "file field 'layout'" in response.get_json()["error"]


def test_upload_size_is_bounded():
    client, fake = make_app()
    response = post(client, "/api/synthesize", data=b"\0" * (MAX_UPLOAD_BYTES + 1))
    assert response.status_code == 413
    assert f"at most {MAX_UPLOAD_BYTES // 2**20} MiB" in response.get_json()["error"]
    assert fake.calls == []


@pytest.mark.parametrize("error, status, message", [
    (SpadeClientError("could not reach the model server at x within 3 s", grpc.StatusCode.UNAVAILABLE), 503,
     "The model server at fake-server:8500 is not reachable: is it running, and is the address right?"),
    (SpadeClientError("INVALID_ARGUMENT: bad size", grpc.StatusCode.INVALID_ARGUMENT), 400,
     "The model server refused the request: INVALID_ARGUMENT: bad size"),
    (SpadeClientError("DEADLINE_EXCEEDED: Deadline Exceeded", grpc.StatusCode.DEADLINE_EXCEEDED), 504,
     "The model server did not answer in time (the studio's --timeout): DEADLINE_EXCEEDED"),
    (SpadeClientError("NOT_FOUND: Servable not found", grpc.StatusCode.NOT_FOUND), 502,
     "The model server failed: NOT_FOUND: Servable not found"),
    (RuntimeError("boom"), 500, "internal error in the studio (RuntimeError: boom)"),
])
def test_model_server_errors_become_messages(error, status, message):
    client, _ = make_app(error=error)
    response = post(client, "/api/synthesize", data=png(layout()))
    assert response.status_code == status
    assert message in response.get_json()["error"] and "Traceback" not in response.get_data(as_text=True)
    if status == 503:
        assert response.get_json()["detail"] == str(error)
    if isinstance(error, SpadeClientError):
        body = client.get("/api/status")
        assert body.status_code == status and body.get_json()["ok"] is False


def test_vae_model_style_photo_and_fixed_size():
    client, fake = make_app(use_vae=True, use_instance=False)
    photo = png(np.full((300, 400, 3), 120, np.uint8), fmt="JPEG")
    body = post(client, "/api/style", field="style", data=photo, filename="photo.jpg").get_json()
    assert body["z"] == [2.0] * 256
    (_, image, _), = fake.calls
    assert image.shape == (32, 64, 3) and image.dtype == np.uint8  # scaled and cropped to image_size
    response = post(client, "/api/synthesize", data=png(layout()), z=json.dumps(body["z"]))
    assert response.status_code == 200
    colours = np.asarray(labels_json()["palette"], np.uint8)
    np.testing.assert_array_equal(decode(response.data), colours[layout()] + 2)
    assert fake.calls[-1][2]["z"].shape == (256,) and "instance_map" not in fake.calls[-1][2]
    response = post(client, "/api/synthesize", data=png(layout(64, 128)))
    assert response.status_code == 400 and "only takes 32 x 64" in response.get_json()["error"]
    for z, message in (("[1, 2]", "a list of 256 finite numbers"), ("nope", "JSON list")):
        response = post(client, "/api/synthesize", data=png(layout()), z=z)
        assert response.status_code == 400 and message in response.get_json()["error"]
    response = post(client, "/api/style", field="style", data=b"not a photo", filename="x.jpg")
    assert response.status_code == 400 and "not an image file" in response.get_json()["error"]


def test_style_photo_needs_a_vae_model():
    client, _ = make_app()
    response = post(client, "/api/style", field="style", data=png(np.zeros((8, 8, 3), np.uint8)))
    assert response.status_code == 400 and "not a VAE model" in response.get_json()["error"]


def test_dontcare_label_takes_255():
    client, fake = make_app(contain_dontcare_label=True, unknown_label=255)
    labels = layout()
    labels[:4] = 255
    assert post(client, "/api/synthesize", data=png(labels)).status_code == 200
    np.testing.assert_array_equal(fake.calls[0][1], labels)


# ---------- the command line and a real model server ----------


@pytest.fixture(scope="module")
def standin_export():
    """A stand-in export (palette[label] + seeded noise) whose classes are named like the built-in data's."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="studio-standin-")) / "spade"
    version = write_standin_model(base, 1, label_nc=8, size=(64, 64))
    labels_path = version / "assets.extra" / "labels.json"
    labels = json.loads(labels_path.read_text())
    labels["class_names"] = SYNTHETIC_NAMES
    labels_path.write_text(json.dumps(labels))
    yield base
    shutil.rmtree(base.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def model_server(standin_export):
    from serving.server import ModelServer

    server = ModelServer(model_base_path=str(standin_export), port=0, file_system_poll_wait_seconds=0)
    port = server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=1)


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


# ---------- the page in headless Chromium ----------


def _unavailable(reason):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install the test requirements)")
    if not (os.path.exists("/usr/bin/chromium") and os.path.exists("/usr/bin/chromedriver")):
        if os.geteuid() == 0:
            subprocess.run(["bash", str(REPO / "scripts" / "install_browser.sh")], capture_output=True, timeout=900)
        if not (os.path.exists("/usr/bin/chromium") and os.path.exists("/usr/bin/chromedriver")):
            _unavailable("Debian's chromium and chromium-driver cannot be installed here (scripts/install_browser.sh)")
    profile = tempfile.mkdtemp(prefix="studio-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 f"--user-data-dir={profile}", "--window-size=1200,640", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


class Page:
    """The studio page in the browser: tools, painting, and what it shows."""

    def __init__(self, driver, url):
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        self.driver, self.ActionChains, self.By = driver, ActionChains, By
        driver.get(url)
        self.canvas = driver.find_element(By.ID, "layout")
        self._since = 0  # the layout version before the last action: wait_ready waits for a newer one

    def _acting(self):
        self._since = self.driver.execute_script("return studio.version")

    def element(self, css):
        return self.driver.find_element(self.By.CSS_SELECTOR, css)

    def choose(self, class_name=None, tool=None):
        if class_name is not None:
            self.element(f'.swatch[data-name="{class_name}"]').click()
        if tool is not None:
            self.element(f"#tool-{tool}").click()

    def css_offset(self, x, y):
        """Offsets from the canvas centre (what Selenium takes) of layout pixel (x, y)'s centre."""
        rect = self.driver.execute_script("return arguments[0].getBoundingClientRect().toJSON()", self.canvas)
        size = self.driver.execute_script("return [studio.width, studio.height]")
        return (round((x + 0.5) / size[0] * rect["width"] - rect["width"] / 2),
                round((y + 0.5) / size[1] * rect["height"] - rect["height"] / 2))

    def press(self, button_id):
        self._acting()
        self.element(f"#{button_id}").click()

    def click(self, x, y):
        self._acting()
        self.ActionChains(self.driver).move_to_element_with_offset(self.canvas, *self.css_offset(x, y)).click().perform()

    def stroke(self, *points):
        """Brush through layout pixels `points` ((x, y), ...) in one stroke."""
        self._acting()
        chain = self.ActionChains(self.driver).move_to_element_with_offset(self.canvas, *self.css_offset(*points[0]))
        chain.click_and_hold()
        previous = self.css_offset(*points[0])
        for point in points[1:]:
            offset = self.css_offset(*point)
            chain.move_by_offset(offset[0] - previous[0], offset[1] - previous[1])
            previous = offset
        chain.release().perform()

    def set_brush_size(self, size):
        self.driver.execute_script("const s = document.getElementById('brush-size'); s.value = arguments[0];"
                                   "s.dispatchEvent(new Event('input'));", size)

    def wait_ready(self, timeout=30):
        """Wait until the result shows the layout after the last action; returns (layout indices, result image)."""
        from selenium.webdriver.support.ui import WebDriverWait

        ready = ("return studio.version > arguments[0] && document.body.dataset.state === 'ready' && "
                 "document.getElementById('result').dataset.version === String(studio.version)")
        try:
            WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
                lambda d: d.execute_script(ready, self._since))
        except Exception:
            pytest.fail(f"no result for the current layout; page state {self.state()!r}, message {self.message()!r}")
        return self.layout(), self.result()

    def wait_message(self, fragment, timeout=30):
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(lambda d: fragment in self.message())
        except Exception:
            pytest.fail(f"message {fragment!r} not shown; the page shows {self.message()!r}")
        return self.message()

    def message(self):
        return self.driver.execute_script("const m = document.getElementById('message'); return m.hidden ? '' : m.textContent")

    def state(self):
        return self.driver.execute_script("return document.body.dataset.state")

    def _fetch(self, script):
        return base64.b64decode(self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            f"Promise.resolve({script}).then((blob) => blob.arrayBuffer()).then((buffer) => {{"
            "  const bytes = new Uint8Array(buffer); let text = '';"
            "  for (let i = 0; i < bytes.length; i++) text += String.fromCharCode(bytes[i]);"
            "  done(btoa(text)); });"))

    def layout(self):
        """The page's layout, through the PNG it sends (a palette PNG of class indices)."""
        image = Image.open(io.BytesIO(self._fetch("studio.layoutPng()")))
        assert image.mode == "P"
        return np.asarray(image)

    def result(self):
        return decode(self._fetch("fetch(document.getElementById('result').src).then((r) => r.blob())"))

    def seed(self):
        return int(self.element("#seed").get_attribute("value"))

    def upload(self, input_id, path):
        self._acting()
        self.element(f"#{input_id}").send_keys(str(path))

    def screenshot(self, path):
        """Save the whole page (the window is grown to its height)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        chrome, height = self.driver.execute_script(
            "return [window.outerHeight - window.innerHeight, document.documentElement.scrollHeight]")
        self.driver.set_window_size(self.driver.get_window_size()["width"], chrome + height)
        assert self.driver.save_screenshot(str(path)), f"could not save {path}"


@pytest.fixture
def studio_for(browser):
    studios = []

    def start(address, labels, timeout=10):
        studio = serve_studio(address, labels, port=0, timeout=timeout)
        studios.append(studio)
        return Page(browser, studio.url)

    yield start
    for studio in studios:
        studio.stop()


def expected(labels, seed):
    return standin_palette(8)[labels] + seeded_noise(seed, *labels.shape).astype(np.uint8)


@pytest.mark.slow
def test_page_paints_and_the_result_follows(model_server, standin_export, studio_for):
    page = studio_for(model_server, standin_export)
    names = [e.text for e in page.driver.find_elements(page.By.CSS_SELECTOR, ".swatch")]
    assert names == SYNTHETIC_NAMES
    labels, image = page.wait_ready()
    assert not page.element("#style-controls").is_displayed()  # not a VAE model
    assert (labels == 0).all()  # a new layout: all the first class
    seed = page.seed()
    np.testing.assert_array_equal(image, expected(labels, seed))

    page.choose("grass", tool="fill")
    page.click(10, 50)
    grass, grass_image = page.wait_ready()
    assert (grass == GRASS).all()
    np.testing.assert_array_equal(grass_image, expected(grass, seed))

    page.choose("sky", tool="brush")
    page.set_brush_size(8)
    page.stroke((4, 6), (58, 6), (58, 14), (4, 14))
    painted, painted_image = page.wait_ready()
    sky = painted == SKY
    assert sky[6, 4:59].all() and sky[14, 4:59].all() and sky[6:15, 58].all()  # under the stroke
    assert not sky[24:].any() and 600 < sky.sum() < 1600
    assert (painted[~sky] == GRASS).all()
    assert not np.array_equal(painted_image, grass_image)
    np.testing.assert_array_equal(painted_image, expected(painted, seed))  # sky-coloured where painted sky
    assert (np.abs(painted_image[sky].astype(int) - standin_palette(8)[SKY]) < 8).all()

    page.choose("water", tool="fill")
    page.click(30, 10)  # the sky band
    water, water_image = page.wait_ready()
    np.testing.assert_array_equal(water, np.where(sky, WATER, GRASS))
    np.testing.assert_array_equal(water_image, expected(water, seed))

    page.press("undo")
    undone, undone_image = page.wait_ready()
    np.testing.assert_array_equal(undone, painted)
    np.testing.assert_array_equal(undone_image, painted_image)  # same layout and seed: same image

    page.press("random-seed")
    _, reseeded = page.wait_ready()
    new_seed = page.seed()
    if (new_seed - seed) % 8:  # the stand-in's noise repeats every 8 seeds
        assert not np.array_equal(reseeded, painted_image)
    np.testing.assert_array_equal(reseeded, expected(painted, new_seed))

    page.choose("mountain", tool="brush")
    page.set_brush_size(10)
    page.stroke((6, 30), (20, 22), (34, 30), (48, 22), (60, 30))
    page.choose("road")
    page.set_brush_size(6)
    page.stroke((32, 63), (32, 40))
    page.wait_ready()


@pytest.mark.slow
def test_page_shows_upload_errors(model_server, standin_export, studio_for, tmp_path):
    page = studio_for(model_server, standin_export)
    page.wait_ready()
    cases = {
        "notes.png": (b"not a picture", "Cannot use notes.png: the layout is not an image file"),
        "small.png": (png(np.zeros((60, 60), np.uint8)), "multiples of 8"),
        "wide.png": (png(np.zeros((64, 128), np.uint8)), "for width 128 the height must be 128"),
        "classes.png": (png(np.full((64, 64), 9, np.uint8)), "holds 9 at [0, 0], but this model takes class indices 0..7"),
        "colours.png": (png(np.full((64, 64, 3), 250, np.uint8)), "not in the model's palette of 8 classes: (250, 250, 250)"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        page.upload("layout-file", tmp_path / name)
        page.wait_message(message)
    labels = np.full((64, 64), MOUNTAIN, np.uint8)
    labels[32:] = WATER
    (tmp_path / "coloured.png").write_bytes(png(standin_palette(8)[labels]))  # colour-coded: accepted
    page.upload("layout-file", tmp_path / "coloured.png")
    shown, image = page.wait_ready()
    assert page.message() == ""
    np.testing.assert_array_equal(shown, labels)
    np.testing.assert_array_equal(image, expected(labels, page.seed()))


@pytest.mark.slow
def test_page_says_when_the_model_server_is_down(standin_export, studio_for):
    from serving.server import ModelServer

    server = ModelServer(model_base_path=str(standin_export), port=0, file_system_poll_wait_seconds=0)
    port = server.start()
    try:
        page = studio_for(f"127.0.0.1:{port}", standin_export, timeout=2)
        page.wait_ready()
    finally:
        server.stop(grace=0)
    page.choose("sky")
    page.stroke((10, 10), (50, 10))
    message = page.wait_message("is not reachable")
    assert message == f"The model server at 127.0.0.1:{port} is not reachable: is it running, and is the address right?"
    assert "within 2 s" in page.element("#message").get_attribute("title")
    assert page.state() == "error"
    assert page.element("#server-status").text == "model server: unreachable"


@pytest.mark.slow
def test_page_style_photo_for_vae_models(studio_for, tmp_path):
    from serving.server import ModelServer

    write_standin_model(tmp_path / "vae", 1, use_vae=True, label_nc=5, size=(32, 64))
    server = ModelServer(model_base_path=str(tmp_path / "vae"), port=0, file_system_poll_wait_seconds=0)
    port = server.start()
    try:
        page = studio_for(f"127.0.0.1:{port}", tmp_path / "vae")
        page.wait_ready()
        page.choose("class3", tool="fill")
        page.click(5, 5)
        labels, image = page.wait_ready()
        assert labels.shape == (32, 64) and (labels == 3).all()
        np.testing.assert_array_equal(image, standin_palette(5)[labels] + seeded_noise(page.seed(), 32, 64))
        # the stand-in's encode_style: z[0] = mean red / 255; with_z adds round(7 * z[0])
        (tmp_path / "photo.jpg").write_bytes(png(np.full((90, 120, 3), (200, 10, 10), np.uint8), fmt="JPEG"))
        page.upload("style-file", tmp_path / "photo.jpg")
        _, styled = page.wait_ready()
        shift = np.abs(styled.astype(int) - standin_palette(5)[labels])
        assert (shift == round(7 * 200 / 255)).mean() > 0.99, np.unique(shift)  # JPEG: red is 200 give or take 1
        assert not page.element("#seed").is_enabled() and page.element("#style-thumb").is_displayed()
        page.press("style-clear")
        _, unstyled = page.wait_ready()
        np.testing.assert_array_equal(unstyled, image)
        (tmp_path / "notes.txt").write_bytes(b"not a photo")
        page.upload("style-file", tmp_path / "notes.txt")
        page.wait_message("Cannot use notes.txt as a style photo: the style photo is not an image file")
    finally:
        server.stop(grace=1)


# ---------- a tiny trained model ----------


def landscape(size=64):
    """Mountains over a lake and a meadow with a road and trees; no sky: the test paints it in."""
    y, x = np.mgrid[0:size, 0:size]
    labels = np.full((size, size), GRASS, np.uint8)
    labels[y < size * 0.55] = MOUNTAIN
    labels[(y >= size * 0.55) & (y < size * 0.7) & (x < size * 0.6)] = WATER
    labels[(y >= size * 0.62) & (np.abs(x - size * 0.78) < (y - size * 0.55) * 0.5)] = ROAD
    for cx, cy, r in ((0.12, 0.85, 0.09), (0.3, 0.9, 0.07), (0.93, 0.6, 0.06)):
        labels[(x - cx * size) ** 2 + (y - cy * size) ** 2 < (r * size) ** 2] = TREE
    return labels


@pytest.mark.slow
def test_page_with_a_trained_model(tiny_export, studio_for, tmp_path):
    from serving.server import ModelServer

    labels_json_ = json.loads(next(tiny_export.glob("*/assets.extra/labels.json")).read_text())
    assert labels_json_["class_names"] == SYNTHETIC_NAMES and labels_json_["use_instance"]
    server = ModelServer(model_base_path=str(tiny_export), port=0, file_system_poll_wait_seconds=0)
    port = server.start()
    try:
        page = studio_for(f"127.0.0.1:{port}", tiny_export, timeout=60)
        page.wait_ready(timeout=90)
        (tmp_path / "landscape.png").write_bytes(png(landscape()))
        page.upload("layout-file", tmp_path / "landscape.png")
        before, before_image = page.wait_ready(timeout=60)
        np.testing.assert_array_equal(before, landscape())

        page.choose("sky", tool="brush")
        page.set_brush_size(12)
        page.stroke((2, 3), (61, 3), (61, 12), (2, 12), (2, 18), (20, 22), (40, 16), (61, 20))
        after, after_image = page.wait_ready(timeout=60)
        painted = (after == SKY) & (before != SKY)
        assert painted.sum() > 500 and (after[~painted] == before[~painted]).all()
        assert not np.array_equal(after_image, before_image)
        sky_colour = np.asarray(labels_json_["palette"][SKY], float)

        def distance_to_sky(image):
            return np.linalg.norm(image[painted].astype(float).mean(0) - sky_colour)

        blue = after_image[painted].astype(float).mean(0)
        assert distance_to_sky(after_image) < 0.5 * distance_to_sky(before_image), (before_image[painted].mean(0), blue)
        assert blue[2] > blue[0] + 30, blue  # sky-blue where the sky was painted
        screenshot = SCREENSHOT if os.environ.get("SPADE_UPDATE_SCREENSHOT") == "1" else tmp_path / "studio.png"
        page.screenshot(screenshot)
        assert screenshot.stat().st_size > 10_000  # a real picture of the page
    finally:
        server.stop(grace=1)
