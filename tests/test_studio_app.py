"""The painting page's web app (serving/studio/app.py) through Flask's test client, with a fake gRPC
client: the page, layouts in every encoding, bad input and server errors as messages, VAE style photos."""

import base64
import io
import json

import grpc
import numpy as np
import pytest

from serving.client import SpadeClientError
from serving.studio import create_app
from serving.studio.app import MAX_UPLOAD_BYTES

from helpers.studio import decode, png


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
    for asset in ("requests.js", "studio.js", "studio.css"):
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
