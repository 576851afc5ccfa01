"""serving.client: SpadeClient and its command line, against serving.server and a stand-in model."""

import shutil
import socket
import subprocess
import time

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image
from tensorflow_serving.config import model_server_config_pb2

from serving import client as client_module
from serving.client import SpadeClient, SpadeClientError
from serving.server import ModelServer
from helpers.standin_model import instance_edges, palette, seeded_noise, write_standin_model

PALETTE = palette(4).astype(int)


def labels_image(height=32, width=32):
    """Classes 0..3 in four vertical bands."""
    return np.broadcast_to(np.repeat(np.arange(4), width // 4), (height, width)).astype(np.uint8)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    write_standin_model(root / "spade", 1)
    write_standin_model(root / "spade", 2)
    write_standin_model(root / "vae", 1, use_vae=True, use_instance=True, contain_dontcare_label=True)
    return root


@pytest.fixture(scope="module")
def address(exports, tmp_path_factory):
    config = model_server_config_pb2.ModelServerConfig()
    spade = config.model_config_list.config.add(name="spade", base_path=str(exports / "spade"))
    spade.model_version_policy.all.SetInParent()
    spade.version_labels["stable"] = 1
    config.model_config_list.config.add(name="spade_vae", base_path=str(exports / "vae"))
    path = tmp_path_factory.mktemp("config") / "models.config"
    path.write_text(text_format.MessageToString(config))
    server = ModelServer(model_config_file=path, port=0, file_system_poll_wait_seconds=0)
    port = server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture
def spade(address):
    with SpadeClient(address, timeout=10) as client:
        yield client


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_synthesize_single_batch_and_seeds(spade):
    labels = labels_image()
    image = spade.synthesize(labels)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    noise = image.astype(int) - PALETTE[labels]
    assert noise.min() >= 0 and noise.max() < 8

    seeded = spade.synthesize(labels, seed=11)
    np.testing.assert_array_equal(seeded, PALETTE[labels] + seeded_noise(11, 32, 32))
    np.testing.assert_array_equal(spade.synthesize(labels.astype(np.int64), seed=11), seeded)

    batch = spade.synthesize(np.stack([labels, labels[:, ::-1]]), seed=[11, 12])
    assert batch.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(batch[0], seeded)
    np.testing.assert_array_equal(batch[1], PALETTE[labels[:, ::-1]] + seeded_noise(12, 32, 32))
    same_seed = spade.synthesize(np.stack([labels, labels]), seed=11)
    np.testing.assert_array_equal(same_seed[1], seeded)


def test_versions_and_labels_reach_the_server(address, exports):
    with SpadeClient(address, version=1, timeout=10) as client:
        assert client.metadata()["version"] == 1
    assert SpadeClient(address, timeout=10).metadata()["version"] == 2
    with SpadeClient(address, version_label="stable", timeout=10) as client:
        assert client.metadata()["version"] == 1
        assert client.status() == [{"version": 1, "state": "AVAILABLE", "error_code": 0, "error_message": ""}]
    with SpadeClient(address, version_label="canary", timeout=10) as client:
        with pytest.raises(SpadeClientError, match="Unrecognized servable version label: canary") as info:
            client.synthesize(labels_image())
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ValueError, match="not both"):
        SpadeClient(address, version=1, version_label="stable")


def test_style_z_and_instance_map(address):
    labels = labels_image().copy()
    labels[:2, :2] = 255  # don't-care: black
    instances = np.zeros((32, 32), np.int32)
    instances[10:, :] = 3
    base = np.concatenate([PALETTE, [[0, 0, 0]]])[np.where(labels == 255, 4, labels)]
    edges = instance_edges(instances)
    with SpadeClient(address, model="spade_vae", timeout=10) as client:
        white = np.full((32, 32, 3), 255, np.uint8)
        for kwargs, shift in [({"style_image": white}, 7), ({"style_image": white * 0}, 0),
                              ({"z": np.eye(1, 256, dtype=np.float32)[0]}, 7)]:
            image = client.synthesize(labels, instance_map=instances, **kwargs).astype(int)
            expected = base + shift
            expected[edges] = 255
            np.testing.assert_array_equal(image, expected)
        assert client.encode_style(np.stack([white, white * 0]))[:, 0].tolist() == [1.0, 0.0]
        with pytest.raises(SpadeClientError, match="only takes 32 x 32|expects \\[-1, 32, 32\\]"):
            client.synthesize(labels[:16, :16], instance_map=instances[:16, :16])


def test_metadata_status_and_labels(address, exports):
    with SpadeClient(address, labels_path=exports / "spade", timeout=10) as client:
        metadata = client.metadata()
        assert metadata["model"] == "spade" and metadata["version"] == 2
        assert set(metadata["signatures"]) == {"serving_default", "with_seed"}
        assert metadata["signatures"]["with_seed"]["inputs"] == {
            "label_map": {"dtype": "uint8", "shape": [-1, -1, -1]}, "seed": {"dtype": "int64", "shape": [-1]}}
        assert metadata["signatures"]["serving_default"]["outputs"]["image"]["shape"] == [-1, -1, -1, 3]
        assert client.status() == [{"version": v, "state": "AVAILABLE", "error_code": 0, "error_message": ""}
                                   for v in (1, 2)]
        labels = client.labels()
        assert labels["palette"] == PALETTE.tolist() and labels["label_nc"] == 4
    assert list(client_module.read_labels_json(exports / "spade" / "1").class_names) == labels["class_names"]
    with pytest.raises(SpadeClientError, match="labels_path"):
        SpadeClient(address).labels()


def test_server_errors_carry_code_and_message(spade, address):
    bad = labels_image().copy()
    bad[5, 6] = 7
    with pytest.raises(SpadeClientError) as info:
        spade.synthesize(bad)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert 'Input "label_map" holds 7 at [0, 5, 6]' in str(info.value) and "0..3" in str(info.value)
    with pytest.raises(SpadeClientError, match="Latest\\(nope\\)") as info:
        SpadeClient(address, model="nope", timeout=10).synthesize(labels_image())
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(SpadeClientError, match="Serving signature key \"with_z\" not found") as info:
        spade.synthesize(labels_image(), z=np.zeros(256, np.float32))
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("kwargs, message", [
    ({"label_map": labels_image(), "seed": 1, "z": np.zeros(256)}, "at most one of"),
    ({"label_map": labels_image().astype(np.float32)}, "must hold integers"),
    ({"label_map": np.full((8, 8), 300)}, "0..255"),
    ({"label_map": np.zeros((1, 8, 8, 3), np.uint8)}, "must be \\[H, W\\] or \\[B, H, W\\]"),
    ({"label_map": labels_image(), "instance_map": np.zeros((16, 16), np.int32)}, "must match label_map"),
])
def test_bad_arguments_fail_before_sending(kwargs, message):
    client = SpadeClient(f"127.0.0.1:{unused_port()}", timeout=0.2)
    with pytest.raises(ValueError, match=message):
        client.synthesize(**kwargs)


def test_server_down_fails_fast_with_address():
    address = f"127.0.0.1:{unused_port()}"
    start = time.monotonic()
    with pytest.raises(SpadeClientError, match=f"could not reach the model server at {address} within 0.5 s") as info:
        SpadeClient(address, timeout=0.5).synthesize(labels_image())
    assert time.monotonic() - start < 3
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls(exports, tmp_path):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"), "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    server = ModelServer(model_base_path=exports / "spade", port=0, file_system_poll_wait_seconds=0,
                         ssl_cert=tmp_path / "cert.pem", ssl_key=tmp_path / "key.pem")
    port = server.start()
    try:
        certificate = (tmp_path / "cert.pem").read_bytes()
        with SpadeClient(f"127.0.0.1:{port}", root_certificates=certificate, timeout=10) as client:
            np.testing.assert_array_equal(client.synthesize(labels_image(), seed=4),
                                          PALETTE[labels_image()] + seeded_noise(4, 32, 32))
        with pytest.raises(SpadeClientError, match="could not reach"):
            SpadeClient(f"127.0.0.1:{port}", timeout=0.5).synthesize(labels_image())
    finally:
        server.stop(0)


# command line


def run_cli(capsys, *argv):
    code = client_module.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_index_png(address, tmp_path, capsys):
    labels = labels_image(16, 16)
    Image.fromarray(labels, mode="L").save(tmp_path / "labels.png")
    code, out, _ = run_cli(capsys, "--server", address, "--model", "spade", "--label", tmp_path / "labels.png",
                           "--out", tmp_path / "image.png", "--seed", 9)
    assert code == 0 and "image.png" in out
    image = np.asarray(Image.open(tmp_path / "image.png"))
    np.testing.assert_array_equal(image, PALETTE[labels] + seeded_noise(9, 16, 16))


def test_cli_colour_png_with_labels_json_or_base_path(address, exports, tmp_path, capsys):
    labels = labels_image(16, 16)
    Image.fromarray(palette(4)[labels]).save(tmp_path / "colours.png")
    for source in (["--labels_json", exports / "spade" / "2" / "assets.extra" / "labels.json"],
                   ["--model_base_path", exports / "spade"]):
        code, _, err = run_cli(capsys, "--server", address, "--label", tmp_path / "colours.png",
                               "--out", tmp_path / "image.png", "--seed", 2, *source)
        assert code == 0, err
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "image.png")),
                                      PALETTE[labels] + seeded_noise(2, 16, 16))


def test_cli_instance_png(address, exports, tmp_path, capsys):
    labels = labels_image()
    instances = np.zeros((32, 32), np.uint8)
    instances[:, 8:] = 2
    Image.fromarray(labels).save(tmp_path / "labels.png")
    Image.fromarray(instances).save(tmp_path / "instances.png")
    code, _, err = run_cli(capsys, "--server", address, "--model", "spade_vae", "--label", tmp_path / "labels.png",
                           "--instance", tmp_path / "instances.png", "--out", tmp_path / "image.png")
    assert code == 0, err
    image = np.asarray(Image.open(tmp_path / "image.png"))
    assert (image[instance_edges(instances)] == 255).all()
    assert not (image[~instance_edges(instances)] == 255).any()


def test_cli_bad_files_exit_2_with_message(address, exports, tmp_path, capsys):
    Image.fromarray(palette(4)[labels_image(16, 16)]).save(tmp_path / "colours.png")
    odd = palette(4)[labels_image(16, 16)]
    odd[3, 5] = (1, 2, 3)
    Image.fromarray(odd).save(tmp_path / "odd.png")
    (tmp_path / "text.png").write_text("not an image")
    Image.fromarray(np.zeros((8, 8, 2), np.uint8)[..., 0].astype(np.float32), mode="F").save(tmp_path / "float.tif")
    labels_json = exports / "spade" / "1" / "assets.extra" / "labels.json"
    cases = [
        (["--label", tmp_path / "colours.png"], "colour (RGB) label map: give the model's labels.json"),
        (["--label", tmp_path / "odd.png", "--labels_json", labels_json], "(1, 2, 3): 1 px, the first at (x=5, y=3)"),
        (["--label", tmp_path / "text.png"], "is not a readable image"),
        (["--label", tmp_path / "missing.png"], "is not a readable image"),
        (["--label", tmp_path / "float.tif"], "it is a F-mode image"),
        (["--label", tmp_path / "colours.png", "--labels_json", tmp_path / "nope.json"], "cannot read labels"),
        (["--label", tmp_path / "colours.png", "--model_base_path", exports / "vae"],
         "this model uses instance maps (use_instance in labels.json): give --instance"),
    ]
    for args, message in cases:
        code, _, err = run_cli(capsys, "--server", address, "--out", tmp_path / "image.png", *args)
        assert code == 2 and message in err, err
    assert not (tmp_path / "image.png").exists()


def test_cli_server_errors_exit_1_naming_the_file(address, tmp_path, capsys):
    labels = labels_image(16, 16).copy()
    labels[2, 3] = 9
    Image.fromarray(labels).save(tmp_path / "labels.png")
    code, _, err = run_cli(capsys, "--server", address, "--label", tmp_path / "labels.png", "--out", tmp_path / "o.png")
    assert code == 1
    assert "labels.png" in err and "INVALID_ARGUMENT" in err and "holds 9 at [0, 2, 3]" in err
    code, _, err = run_cli(capsys, "--server", f"127.0.0.1:{unused_port()}", "--timeout", "0.3",
                           "--label", tmp_path / "labels.png", "--out", tmp_path / "o.png")
    assert code == 1 and "could not reach" in err


# ---------- the REST API: the same answers as gRPC ----------


@pytest.fixture(scope="module")
def rest_and_grpc(exports):
    server = ModelServer(model_name="spade_vae", model_base_path=str(exports / "vae"), port=0,
                         rest_api_port=unused_port(), file_system_poll_wait_seconds=0)
    port = server.start()
    yield f"http://127.0.0.1:{server.rest_api_port}", f"127.0.0.1:{port}"
    server.stop(0)


def test_rest_answers_as_grpc(rest_and_grpc):
    rest_address, grpc_address = rest_and_grpc
    labels = labels_image()
    instances = np.zeros((32, 32), np.int32)
    instances[10:] = 3
    with SpadeClient(rest_address, model="spade_vae", timeout=10) as rest, \
            SpadeClient(grpc_address, model="spade_vae", timeout=10) as grpc_client:
        assert rest.rest and not grpc_client.rest
        for kwargs in ({"seed": 5}, {"z": np.eye(1, 256, dtype=np.float32)[0]},
                       {"style_image": np.full((32, 32, 3), 255, np.uint8)}):
            image = rest.synthesize(labels, instance_map=instances, **kwargs)
            assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
            np.testing.assert_array_equal(image, grpc_client.synthesize(labels, instance_map=instances, **kwargs))
        assert rest.metadata() == grpc_client.metadata()
        assert rest.status() == grpc_client.status()
        with pytest.raises(SpadeClientError, match=r"expects \[-1, 32, 32\]") as info:
            rest.synthesize(labels[:16, :16], instance_map=instances[:16, :16], seed=1)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with SpadeClient(rest_address, model="nope", timeout=10) as rest, pytest.raises(SpadeClientError) as info:
        rest.status()
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_rest_server_down_is_a_clear_error():
    with SpadeClient(f"http://127.0.0.1:{unused_port()}", timeout=2) as client:
        with pytest.raises(SpadeClientError, match="could not reach the model server") as info:
            client.status()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_rest_command_line(rest_and_grpc, tmp_path, capsys):
    rest_address, grpc_address = rest_and_grpc
    Image.fromarray(labels_image()).save(tmp_path / "labels.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "instances.png")
    outputs = []
    for server in (rest_address, grpc_address):
        out = tmp_path / f"{len(outputs)}.png"
        code, _, err = run_cli(capsys, "--server", server, "--model", "spade_vae", "--label", tmp_path / "labels.png",
                               "--instance", tmp_path / "instances.png", "--seed", "4", "--out", out)
        assert code == 0, err
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
