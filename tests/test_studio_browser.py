"""The painting page in headless Chromium (serving/studio/static): painting, uploads and their errors,
a stopped model server, VAE style photos, and a tiny trained model.

These tests use Debian's chromium and chromium-driver (scripts/install_browser.sh); they skip with
the reason where the browser cannot be installed, and fail instead under CI=true. The test with a
tiny trained model takes a screenshot; with SPADE_UPDATE_SCREENSHOT=1 it replaces the README's
docs/studio.png (otherwise it goes to the test's temporary folder, so tests leave the checkout as it was).
"""

import base64
import io
import json
import os
import pathlib
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
from PIL import Image

from serving.studio import serve_studio

from helpers.standin_model import palette as standin_palette
from helpers.standin_model import seeded_noise, write_standin_model
from helpers.studio import GRASS, MOUNTAIN, ROAD, SKY, SYNTHETIC_NAMES, TREE, WATER, decode, png

REPO = pathlib.Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "docs" / "studio.png"


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
