"""serving.rest: TF Serving's REST API on the embedded server, against the tiny trained export and a stand-in VAE."""

import concurrent.futures
import http.client
import json
import logging
import socket
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format, text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from serving.server import ModelServer
from helpers.standin_model import write_slow_model, write_standin_model

MAX_BODY = 2**20


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_export, tmp_path_factory):
    """One server: "spade" (the tiny export) and "vae" (a stand-in with several float outputs), gRPC and REST."""
    vae = tmp_path_factory.mktemp("vae")
    write_standin_model(vae, 1, use_vae=True)
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name="spade", base_path=str(tiny_export))
    config.model_config_list.config.add(name="vae", base_path=str(vae))
    path = tmp_path_factory.mktemp("config") / "models.config"
    path.write_text(text_format.MessageToString(config))
    server = ModelServer(model_config_file=str(path), port=0, rest_api_port=unused_port(),
                         file_system_poll_wait_seconds=0, rest_api_max_body_bytes=MAX_BODY)
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield server, prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()
    server.stop(0)


@pytest.fixture(scope="module")
def labels_json(tiny_export):
    return json.loads((tiny_export / "1" / "assets.extra" / "labels.json").read_text())


@pytest.fixture(scope="module")
def layout(labels_json):
    """A label map of every class in vertical bands, and an instance map of two halves."""
    height, width = labels_json["image_size"]
    labels = np.broadcast_to(np.arange(width) * labels_json["label_nc"] // width, (height, width)).astype(np.uint8)
    instances = (np.arange(width)[None, :].repeat(height, 0) >= width // 2).astype(np.int32)
    return labels, instances


def rest(server, method, path, body=None, headers=None):
    """(HTTP status, decoded JSON body) of one request; `body` is bytes or an object sent as JSON."""
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_api_port, timeout=60)
    try:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        connection.request(method, path, body=data, headers=headers or {})
        response = connection.getresponse()
        assert response.getheader("Content-Type") == "application/json"
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def grpc_image(stub, labels, instances, seeds):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "spade"
    request.model_spec.signature_name = "with_seed"
    request.inputs["label_map"].CopyFrom(tf.make_tensor_proto(labels))
    request.inputs["instance_map"].CopyFrom(tf.make_tensor_proto(instances))
    request.inputs["seed"].CopyFrom(tf.make_tensor_proto(np.array(seeds, np.int64)))
    return tf.make_ndarray(stub.Predict(request, timeout=60).outputs["image"])


def test_predict_rows_and_columns_give_the_grpc_images(served, layout):
    server, stub = served
    labels, instances = layout
    other = labels[:, ::-1].copy()
    expected = grpc_image(stub, np.stack([labels, other]), np.stack([instances, instances]), [3, 8])
    assert expected.shape[0] == 2 and not np.array_equal(expected[0], expected[1])
    before = sum(size * count for size, count in server.batch_sizes().items())

    rows = {"signature_name": "with_seed", "instances": [
        {"label_map": labels.tolist(), "instance_map": instances.tolist(), "seed": 3},
        {"label_map": other.tolist(), "instance_map": instances.tolist(), "seed": 8}]}
    status, body = rest(server, "POST", "/v1/models/spade:predict", rows)
    assert status == 200 and list(body) == ["predictions"]
    np.testing.assert_array_equal(np.array(body["predictions"]), expected)  # one output: a plain value per item

    columns = {"signature_name": "with_seed", "inputs": {
        "label_map": [labels.tolist()], "instance_map": [instances.tolist()], "seed": [3], "ignored": 1}}
    status, body = rest(server, "POST", "/v1/models/spade/versions/1:predict", columns)
    assert status == 200 and list(body) == ["outputs"]
    np.testing.assert_array_equal(np.array(body["outputs"]), expected[:1])

    after = sum(size * count for size, count in server.batch_sizes().items())
    assert after - before == 3  # both REST requests ran through the batching scheduler

    status, body = rest(server, "POST", "/v1/models/spade:predict",
                        {"instances": [{"label_map": labels.tolist(), "instance_map": instances.tolist()}]})
    assert status == 200 and np.array(body["predictions"]).shape == expected[:1].shape  # serving_default


def test_several_float_outputs(served):
    server, stub = served
    image = np.full((1, 2, 2, 3), 51, np.uint8)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "vae"
    request.model_spec.signature_name = "encode_style"
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(image))
    expected = {alias: tf.make_ndarray(t) for alias, t in stub.Predict(request, timeout=60).outputs.items()}

    status, body = rest(server, "POST", "/v1/models/vae:predict",
                        {"signature_name": "encode_style", "instances": image.tolist()})
    assert status == 200
    [item] = body["predictions"]  # several outputs: an object per item
    assert sorted(item) == sorted(expected) == ["logvar", "mu", "z"]
    for alias, value in item.items():
        np.testing.assert_array_equal(np.array(value, np.float32), expected[alias][0])
    assert repr(item["z"][0]) == str(expected["z"][0, 0]) != repr(float(expected["z"][0, 0]))  # float32's shortest

    status, body = rest(server, "POST", "/v1/models/vae:predict",
                        {"signature_name": "encode_style", "inputs": image.tolist()})
    assert status == 200 and sorted(body["outputs"]) == ["logvar", "mu", "z"]  # several outputs: an object
    np.testing.assert_array_equal(np.array(body["outputs"]["mu"], np.float32), expected["mu"])


def test_status_and_metadata_json(served, tiny_export):
    server, _ = served
    available = {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert rest(server, "GET", "/v1/models/spade") == (200, available)
    assert rest(server, "GET", "/v1/models/spade/versions/1") == (200, available)

    status, body = rest(server, "GET", "/v1/models/spade/metadata")
    assert status == 200 and sorted(body) == ["metadata", "model_spec"]
    assert body["model_spec"] == {"name": "spade", "signature_name": "", "version": "1"}
    saved = saved_model_pb2.SavedModel.FromString((tiny_export / "1" / "saved_model.pb").read_bytes())
    served_defs = body["metadata"]["signature_def"]["signature_def"]
    assert set(served_defs) == set(saved.meta_graphs[0].signature_def)
    for name, signature in saved.meta_graphs[0].signature_def.items():
        assert json_format.ParseDict(served_defs[name], type(signature)()) == signature
    label_map = served_defs["with_seed"]["inputs"]["label_map"]
    assert label_map["dtype"] == "DT_UINT8" and [d["size"] for d in label_map["tensor_shape"]["dim"]] == ["-1"] * 3
    assert served_defs["with_seed"]["method_name"] == "tensorflow/serving/predict"


def test_same_messages_as_grpc(served, layout, labels_json):
    """Checks after the JSON conversion are the gRPC ones: same message, HTTP status from the gRPC code."""
    server, stub = served
    labels, instances = layout
    bad = labels.copy()
    bad[0, 0] = labels_json["label_nc"] + 1
    with pytest.raises(grpc.RpcError) as info:
        grpc_image(stub, bad[None], instances[None], [1])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status, body = rest(server, "POST", "/v1/models/spade:predict", {"signature_name": "with_seed", "instances": [
        {"label_map": bad.tolist(), "instance_map": instances.tolist(), "seed": 1}]})
    assert (status, body) == (400, {"error": info.value.details()})
    assert 'Input "label_map" holds' in body["error"]


PREDICT = "/v1/models/spade:predict"
ERRORS = {  # (method, path, body, HTTP status, message fragments)
    "unknown model": ("POST", "/v1/models/nope:predict", {"instances": [1]}, 404,
                      ["Servable not found for request: Latest(nope)"]),
    "unknown version": ("POST", "/v1/models/spade/versions/7:predict", {"instances": [1]}, 404,
                        ["Servable not found for request: Specific(spade, 7)"]),
    "unknown label": ("POST", "/v1/models/spade/labels/stable:predict", {"instances": [1]}, 400,
                      ["Unrecognized servable version label: stable"]),
    "status of an unknown model": ("GET", "/v1/models/nope", None, 404, ["Could not find any versions of model nope"]),
    "metadata of an unknown version": ("GET", "/v1/models/spade/versions/7/metadata", None, 404,
                                       ["Servable not found for request: Specific(spade, 7)"]),
    "bad JSON": ("POST", PREDICT, b"{instances: [1]}", 400,
                 ["JSON Parse error: Missing a name for object member. at offset: 1"]),
    "empty body": ("POST", PREDICT, b"", 400, ["JSON Parse error: The document is empty"]),
    "not an object": ("POST", PREDICT, [1, 2], 400, ["Is not object"]),
    "neither instances nor inputs": ("POST", PREDICT, {"instance": []}, 400, ["Missing 'inputs' or 'instances' key"]),
    "unknown signature": ("POST", PREDICT, {"signature_name": "nope", "instances": [1]}, 400,
                          ['Serving signature name: "nope" not found in signature def']),
    "missing input, rows": ("POST", PREDICT, {"signature_name": "with_seed", "instances": [
        {"label_map": [[0]], "instance_map": [[0]]}]}, 400,
        ["Failed to process element: 0 of 'instances' list", "keys must be equal to: instance_map,label_map,seed"]),
    "missing input, columns": ("POST", PREDICT, {"signature_name": "with_seed", "inputs": {
        "label_map": [[[0]]], "instance_map": [[[0]]]}}, 400, ["Missing named input: seed in 'inputs' object."]),
    "plain rows for several inputs": ("POST", PREDICT, {"instances": [[[0]]]}, 400,
                                      ["instances is a plain list, but expecting list of objects"]),
    "value over uint8": ("POST", PREDICT, {"inputs": {"label_map": [[[300]]], "instance_map": [[[0]]]}}, 400,
                         ["JSON Value: 300 Type: Number is not of expected type: uint8"]),
    "float for uint8": ("POST", PREDICT, {"instances": [{"label_map": [[1.5]], "instance_map": [[0]]}]}, 400,
                        ["Failed to process element: 0 key: label_map of 'instances' list. Error: INVALID_ARGUMENT: "
                         "JSON Value: 1.5 Type: Number is not of expected type: uint8"]),
    "ragged list": ("POST", PREDICT, {"inputs": {"label_map": [[[0, 1], [2]]], "instance_map": [[[0]]]}}, 400,
                    ["Encountered list at unexpected size: 1 at level: 2 expected size: 2"]),
    "items of different shapes": ("POST", PREDICT, {"instances": [{"label_map": [[0]], "instance_map": [[0]]},
                                                                  {"label_map": [[0, 0]], "instance_map": [[0]]}]},
                                  400, ["Expecting tensor size: 1 but got: 2"]),
    "size not a multiple": ("POST", PREDICT, {"inputs": {"label_map": [[[0] * 8] * 8],
                                                         "instance_map": [[[0] * 8] * 8]}}, 400,
                            ['Input "label_map" is 8 x 8 (height x width)', "multiples of"]),
    "classify": ("POST", "/v1/models/spade:classify", {"examples": []}, 501, ["Classify is not served here"]),
    "no model name": ("GET", "/v1/models", None, 400, ["Missing model name in request."]),
    "malformed": ("GET", PREDICT, None, 400, ["Malformed request: GET /v1/models/spade:predict"]),
    "outside the API": ("GET", "/index.html", None, 404, ["/v1/models/"]),
    "body over the limit": ("POST", PREDICT, b"", 413, [f"over this server's limit of {MAX_BODY} bytes",
                                                        "--rest_api_max_body_bytes"]),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_then_keeps_serving(served, layout, case):
    server, _ = served
    method, path, body, status, fragments = ERRORS[case]
    headers = {"Content-Length": str(MAX_BODY + 1)} if status == 413 else None  # refused before the body is read
    got_status, got = rest(server, method, path, body, headers)
    assert got_status == status and list(got) == ["error"], got
    for fragment in fragments:
        assert fragment in got["error"]
    labels, instances = layout
    ok, _ = rest(server, "POST", PREDICT, {"inputs": {"label_map": [labels.tolist()],
                                                       "instance_map": [instances.tolist()]}})
    assert ok == 200


def test_large_body_refused_before_upload(served):
    """curl asks `Expect: 100-continue` before sending a large body: the 413 comes instead of the go-ahead."""
    server, _ = served
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_api_port, timeout=30)
    try:
        connection.putrequest("POST", PREDICT)
        connection.putheader("Content-Length", str(10 * MAX_BODY))
        connection.putheader("Expect", "100-continue")
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413 and "--rest_api_max_body_bytes" in json.loads(response.read())["error"]
    finally:
        connection.close()


@pytest.fixture
def slow_server(tmp_path):
    """A server of `write_slow_model` (its requests sleep `milliseconds` inside TensorFlow), gRPC and REST."""
    write_slow_model(tmp_path / "slow")
    server = ModelServer(model_base_path=str(tmp_path / "slow"), port=0, rest_api_port=unused_port(),
                         file_system_poll_wait_seconds=0)
    server.start()
    yield server
    server.stop(0)


def test_stop_answers_a_request_still_computing_503_after_the_grace_period(slow_server):
    body = {"instances": [{"label_map": [[0] * 8] * 8, "milliseconds": 3000}]}
    sent = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(rest, slow_server, "POST", "/v1/models/spade:predict", body)
        time.sleep(1.0)
        assert not answer.done()  # computing
        start = time.monotonic()
        slow_server.stop(0.5)
        stop_seconds = time.monotonic() - start
        status, payload = answer.result(timeout=10)
    assert stop_seconds < 0.5 + 1.0, f"stop took {stop_seconds:.2f} s with a grace of 0.5 s"
    assert status == 503 and "grace period of 0.5 s over" in payload["error"], payload
    time.sleep(max(0.0, sent + 3.5 - time.monotonic()))  # the cancelled computation ends before the next test


def send_predict(client, body):
    """A raw HTTP predict request on an open socket, with no reading of the answer."""
    client.sendall(b"POST /v1/models/spade:predict HTTP/1.1\r\nHost: localhost\r\n"
                   b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def wait_for_log(caplog, text, seconds=90):
    """Until a captured log line contains `text` (the margin is for a loaded machine); on failure the
    message lists everything the server logged."""
    end = time.monotonic() + seconds
    while not any(text in m for m in caplog.messages):
        assert time.monotonic() < end, f"no log line with {text!r} in {seconds} s; the server logged: {caplog.messages}"
        time.sleep(0.05)


def test_a_client_that_disconnects_before_its_answer_is_one_log_line(slow_server, caplog):
    """The answer (about 2 MB of JSON) cannot be written to a client that has closed its connection: the
    server logs one line without a traceback, and keeps serving."""
    body = json.dumps({"instances": [{"label_map": [[0] * 512] * 512, "milliseconds": 300}]}).encode()
    with caplog.at_level(logging.INFO, logger="serving.rest"):
        with socket.create_connection(("127.0.0.1", slow_server.rest_api_port), timeout=30) as client:
            send_predict(client, body)
        wait_for_log(caplog, "closed the connection")  # the server's write fails at once
        assert rest(slow_server, "GET", "/v1/models/spade")[0] == 200
    logged = [r for r in caplog.records if r.name.startswith("serving.rest")]
    [line] = [r.getMessage() for r in logged if "closed the connection" in r.getMessage()]
    assert "before the answer to POST /v1/models/spade:predict (HTTP 200) was sent" in line, line
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"
    assert all(r.levelno < logging.WARNING for r in logged)


def test_a_client_that_stops_reading_its_answer_is_one_log_line(slow_server, caplog, monkeypatch):
    """A client that keeps its connection open but reads none of a large answer (11 MB of JSON, more
    than the kernel buffers) holds the server's write until the idle timeout: one log line, no traceback."""
    from serving.rest import http_server
    monkeypatch.setattr(http_server._Handler, "timeout", 1.0)
    body = json.dumps({"instances": [{"label_map": [[0] * 1024] * 1024, "milliseconds": 0}]}).encode()
    with caplog.at_level(logging.INFO, logger="serving.rest"):
        with socket.socket() as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.connect(("127.0.0.1", slow_server.rest_api_port))
            send_predict(client, body)
            wait_for_log(caplog, "read nothing of the answer")
        assert rest(slow_server, "GET", "/v1/models/spade")[0] == 200
    [line] = [m for m in caplog.messages if "read nothing of the answer" in m]
    assert "POST /v1/models/spade:predict (HTTP 200) for 1 s" in line, line
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"
