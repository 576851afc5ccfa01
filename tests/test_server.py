"""serving.server against a stand-in SavedModel: TF Serving's API, codes and messages, reloads, batching."""

import concurrent.futures
import contextlib
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
import yaml
from google.protobuf import text_format
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)
from tensorflow_serving.config import model_server_config_pb2

from serving import batching, predict, server as server_module
from serving.errors import ServingError, from_op_error
from serving.server import ModelServer
from spade_tf.config import ServeConfig
from helpers.standin_model import (instance_edges, palette, seeded_noise, write_slow_model,
                                    write_standin_model)

REPO = pathlib.Path(__file__).resolve().parent.parent
SERVING = REPO / "serving"
State = get_model_status_pb2.ModelVersionStatus.State
Code = grpc.StatusCode
PALETTE = palette(4).astype(int)


@contextlib.contextmanager
def running(**flags):
    """A ModelServer on a free 127.0.0.1 port, with raw stubs; stopped on exit."""
    server = ModelServer(port=0, **flags)
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield server, prediction_service_pb2_grpc.PredictionServiceStub(channel), \
            model_service_pb2_grpc.ModelServiceStub(channel)
    finally:
        channel.close()
        server.stop(0)


def write_batching(path, **fields):
    path.write_text("".join(f"{name} {{ value: {value} }}\n" for name, value in fields.items()))
    return path


def labels_image(batch=1, height=32, width=32):
    """Classes 0..3 in four vertical bands."""
    row = np.repeat(np.arange(4), width // 4).astype(np.uint8)
    return np.broadcast_to(row, (batch, height, width)).copy()


def make_request(name="spade", signature="", version=None, label=None, output_filter=(), **inputs):
    request = predict_pb2.PredictRequest(output_filter=output_filter)
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(value if isinstance(value, tensor_pb2.TensorProto)
                                       else tf.make_tensor_proto(value))
    return request


def expect_error(call, code, *fragments):
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, info.value.details()
    for fragment in fragments:
        assert fragment in info.value.details()
    return info.value.details()


def image_of(response):
    return tf.make_ndarray(response.outputs["image"]).astype(int)


def status_of(model_stub, name="spade", version=None):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    return {s.version: (s.state, s.status.error_code, s.status.error_message)
            for s in model_stub.GetModelStatus(request).model_version_status}


def wait_for(condition, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("spade")
    write_standin_model(base, 1)
    return base


@pytest.fixture(scope="module")
def served(base, tmp_path_factory):
    params = write_batching(tmp_path_factory.mktemp("batching") / "batching.txt", max_batch_size=8,
                            batch_timeout_micros=20000, num_batch_threads=1)
    with running(model_base_path=base, batching_parameters_file=params, max_pixels=256 * 256,
                 file_system_poll_wait_seconds=0) as s:
        yield s


@pytest.fixture
def stub(served):
    return served[1]


def test_predict_serving_default_and_seeded(stub):
    labels = labels_image()
    response = stub.Predict(make_request(label_map=labels))
    assert response.model_spec.name == "spade"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    assert response.outputs["image"].dtype == tf.uint8.as_datatype_enum
    noise = image_of(response) - PALETTE[labels]
    assert noise.shape == (1, 32, 32, 3) and noise.min() >= 0 and noise.max() < 8

    seeded = image_of(stub.Predict(make_request(signature="with_seed", label_map=labels, seed=np.array([5]))))
    np.testing.assert_array_equal(seeded[0], PALETTE[labels[0]] + seeded_noise(5, 32, 32))
    both = image_of(stub.Predict(make_request(signature="with_seed", label_map=labels_image(2),
                                              seed=np.array([5, 6]))))
    np.testing.assert_array_equal(both[0], seeded[0])
    np.testing.assert_array_equal(both[1], PALETTE[labels[0]] + seeded_noise(6, 32, 32))

    other_size = labels_image(1, 48, 48)
    out = image_of(stub.Predict(make_request(signature="with_seed", label_map=other_size, seed=np.array([1]))))
    np.testing.assert_array_equal(out[0], PALETTE[other_size[0]] + seeded_noise(1, 48, 48))


def test_metadata_is_the_saved_model_signature_defs(stub, base):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "spade"
    response = stub.GetModelMetadata(request)
    assert response.model_spec.version.value == 1
    served = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(served)
    saved = saved_model_pb2.SavedModel.FromString((base / "1" / "saved_model.pb").read_bytes())
    assert dict(served.signature_def) == dict(saved.meta_graphs[0].signature_def)
    label_map = served.signature_def["serving_default"].inputs["label_map"]
    assert label_map.dtype == tf.uint8.as_datatype_enum
    assert [d.size for d in label_map.tensor_shape.dim] == [-1, -1, -1]
    assert set(served.signature_def["with_seed"].inputs) == {"label_map", "seed"}

    del request.metadata_field[:]
    expect_error(lambda: stub.GetModelMetadata(request), Code.INVALID_ARGUMENT,
                 "GetModelMetadataRequest must specify at least one metadata_field")
    request.metadata_field.append("signature_def")
    request.metadata_field.append("warmup")
    expect_error(lambda: stub.GetModelMetadata(request), Code.INVALID_ARGUMENT,
                 "Metadata field warmup is not supported")
    expect_error(lambda: stub.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
        metadata_field=["signature_def"])), Code.INVALID_ARGUMENT, "Missing ModelSpec")


def test_model_status(served):
    model_stub = served[2]
    assert status_of(model_stub) == {1: (State.AVAILABLE, 0, "")}
    assert status_of(model_stub, version=1) == {1: (State.AVAILABLE, 0, "")}
    expect_error(lambda: status_of(model_stub, "nope"), Code.NOT_FOUND, "Could not find any versions of model nope")
    expect_error(lambda: status_of(model_stub, version=7), Code.NOT_FOUND, "Could not find version 7 of model spade")
    expect_error(lambda: model_stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest()),
                 Code.INVALID_ARGUMENT, "Missing ModelSpec")


GOOD = labels_image()
ERRORS = {
    "missing model spec": (predict_pb2.PredictRequest(), Code.INVALID_ARGUMENT, ["Missing ModelSpec"]),
    "unknown model": (make_request("nope", label_map=GOOD), Code.NOT_FOUND,
                      ["Servable not found for request: Latest(nope)"]),
    "unknown version": (make_request(version=7, label_map=GOOD), Code.NOT_FOUND,
                        ["Servable not found for request: Specific(spade, 7)"]),
    "unknown label": (make_request(label="stable", label_map=GOOD), Code.INVALID_ARGUMENT,
                      ["Unrecognized servable version label: stable"]),
    "unknown signature": (make_request(signature="with_style", label_map=GOOD), Code.FAILED_PRECONDITION,
                          ['Serving signature key "with_style" not found.']),
    "missing input": (make_request(signature="with_seed", label_map=GOOD), Code.INVALID_ARGUMENT,
                      ["input size does not match signature: 1!=2 len({label_map}) != len({label_map,seed}). "
                       "Sent extra: {}. Missing but required: {seed}."]),
    "extra input": (make_request(label_map=GOOD, seed=np.array([1])), Code.INVALID_ARGUMENT,
                    ["input size does not match signature: 2!=1", "Sent extra: {seed}. Missing but required: {}."]),
    "misnamed input": (make_request(labels=GOOD), Code.INVALID_ARGUMENT,
                       ["Signature input alias: label_map(feed name: serving_default_label_map:0) not found in "
                        "request", "{labels}"]),
    "wrong dtype": (make_request(label_map=GOOD.astype(np.float32)), Code.INVALID_ARGUMENT,
                    ["Expects arg[0] to be uint8 but float is provided"]),
    "wrong seed dtype": (make_request(signature="with_seed", label_map=GOOD, seed=np.array([1], np.int32)),
                         Code.INVALID_ARGUMENT, ["Expects arg[1] to be int64 but int32 is provided"]),
    "unparsable tensor": (make_request(label_map=tensor_pb2.TensorProto(
        dtype=tf.uint8.as_datatype_enum, tensor_shape={"dim": [{"size": 1}, {"size": 8}, {"size": 8}]},
        tensor_content=b"\0" * 10)), Code.INVALID_ARGUMENT, ["tensor parsing error: label_map"]),
    "wrong rank": (make_request(label_map=GOOD[0]), Code.INVALID_ARGUMENT,
                   ['Input "label_map" has shape [32, 32] but signature "serving_default" expects [-1, -1, -1]']),
    "size not a multiple": (make_request(label_map=GOOD[:, :30, :30]), Code.INVALID_ARGUMENT,
                            ['Input "label_map" is 30 x 30', "multiples of 8", "e.g. 32 x 32"]),
    "wrong aspect ratio": (make_request(label_map=np.zeros((1, 32, 64), np.uint8)), Code.INVALID_ARGUMENT,
                           ["is 32 x 64", "width / height = 1", "for width 64 the height must be 64"]),
    "batch sizes differ": (make_request(signature="with_seed", label_map=labels_image(2), seed=np.array([1])),
                           Code.INVALID_ARGUMENT, ["different batch sizes", "label_map 2, seed 1"]),
    "class out of range": (make_request(label_map=np.where(np.arange(32) == 3, 9, GOOD).astype(np.uint8)),
                           Code.INVALID_ARGUMENT, ['Input "label_map" holds 9 at [0, 0, 3]', "class indices 0..3",
                                                   'model "spade" version 1']),
    "unknown label without dontcare": (make_request(label_map=np.full((1, 8, 8), 255, np.uint8)),
                                       Code.INVALID_ARGUMENT, ["holds 255", "no don't-care label"]),
    "over max_pixels": (make_request(label_map=np.zeros((1, 512, 512), np.uint8)), Code.INVALID_ARGUMENT,
                        ["[1, 512, 512]", "--max_pixels=65536"]),
    "batch over max_batch_size": (make_request(label_map=labels_image(9, 8, 8)), Code.INVALID_ARGUMENT,
                                  ["Task size 9 is larger than maximum batch size 8"]),
    "unknown output": (make_request(output_filter=["picture"], label_map=GOOD), Code.INVALID_ARGUMENT,
                       ["output tensor alias not found in signature: picture Outputs expected to be in the set "
                        "{image}."]),
    "duplicate output": (make_request(output_filter=["image", "image"], label_map=GOOD), Code.INVALID_ARGUMENT,
                         ["duplicate output tensor alias: image"]),
    "message over the gRPC limit": (make_request(label_map=np.zeros((1, 1024, 2048), np.uint8)),
                                    Code.RESOURCE_EXHAUSTED, []),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_request_errors_then_keeps_serving(stub, case):
    request, code, fragments = ERRORS[case]
    expect_error(lambda: stub.Predict(request), code, *fragments)
    assert stub.Predict(make_request(label_map=GOOD)).model_spec.version.value == 1


def test_other_methods_unimplemented(stub):
    for call, request in [(stub.Classify, classification_pb2.ClassificationRequest()),
                          (stub.Regress, regression_pb2.RegressionRequest()),
                          (stub.MultiInference, inference_pb2.MultiInferenceRequest())]:
        expect_error(lambda: call(request), Code.UNIMPLEMENTED, "use Predict")


def test_long_messages_truncated_like_tf_serving(stub):
    details = expect_error(lambda: stub.Predict(make_request(signature="s" * 2000, label_map=GOOD)),
                           Code.FAILED_PRECONDITION)
    assert len(details) == 1024 + len("...TRUNCATED")
    assert details.startswith('Serving signature key "sss') and details.endswith("...TRUNCATED")


def test_unexpected_error_is_one_line_internal(stub, monkeypatch):
    def broken(function, inputs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(predict, "_run", broken)
    details = expect_error(lambda: stub.Predict(make_request(label_map=GOOD)), Code.INTERNAL, "RuntimeError: boom")
    assert "\n" not in details and "Traceback" not in details
    monkeypatch.undo()
    assert stub.Predict(make_request(label_map=GOOD)).model_spec.version.value == 1


def test_concurrent_requests_are_batched(served):
    server, stub, _ = served
    before = server.batch_sizes()
    labels = labels_image(1, 16, 16)

    def client(thread):
        for i in range(50):
            seed = thread * 1000 + i
            out = image_of(stub.Predict(make_request(signature="with_seed", label_map=labels, seed=np.array([seed]))))
            np.testing.assert_array_equal(out[0], PALETTE[labels[0]] + seeded_noise(seed, 16, 16))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(client, t) for t in range(8)]:
            future.result()
    after = server.batch_sizes()
    new = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    assert sum(size * count for size, count in new.items()) == 400
    assert max(size for size, count in new.items() if count) > 1


def test_errors_inside_the_graph_pass_through(tmp_path):
    """A model without labels.json gets no label checks here; the graph's own error reaches the client."""
    write_standin_model(tmp_path, 1)
    (tmp_path / "1" / "assets.extra" / "labels.json").unlink()
    with running(model_base_path=tmp_path, enable_batching=False, file_system_poll_wait_seconds=0) as (_, stub, _m):
        details = expect_error(lambda: stub.Predict(make_request(label_map=np.full((1, 8, 8), 9, np.uint8))),
                               Code.INVALID_ARGUMENT, "label_map values must be < label_nc 4")
        assert "Graph execution error" not in details and "Detected at node" not in details
        assert stub.Predict(make_request(label_map=GOOD)).model_spec.version.value == 1


def test_vae_instance_dontcare_model(tmp_path):
    write_standin_model(tmp_path, 3, use_vae=True, use_instance=True, contain_dontcare_label=True)
    labels = labels_image()
    labels[:, :4, :4] = 255
    labels[:, 4:6, :4] = 4  # the unknown index itself (label_nc) is accepted too, as by the exported graph
    instances = np.zeros((1, 32, 32), np.int32)
    instances[:, :, 20:] = 7
    with running(model_base_path=tmp_path, enable_batching=False, file_system_poll_wait_seconds=0) as (_, stub, _m):
        z = np.zeros((1, 256), np.float32)
        z[0, 0] = 0.5
        out = image_of(stub.Predict(make_request(signature="with_z", label_map=labels, instance_map=instances, z=z)))
        expected = np.concatenate([PALETTE, [[0, 0, 0]]])[np.where(labels == 255, 4, labels)] + 4  # round(3.5)
        edges = instance_edges(instances)
        expected[edges] = 255
        np.testing.assert_array_equal(out, expected)
        assert edges[0, :, 19:21].all() and edges.sum() == 64

        style = np.full((1, 20, 44, 3), 255, np.uint8)  # the style encoder takes any size
        response = stub.Predict(make_request(signature="encode_style", output_filter=["z"], image=style))
        assert list(response.outputs) == ["z"]
        assert tf.make_ndarray(response.outputs["z"])[0, :3].tolist() == [1.0, 1.0, 1.0]

        small = make_request(label_map=labels[:, :16, :16], instance_map=instances[:, :16, :16])
        expect_error(lambda: stub.Predict(small), Code.INVALID_ARGUMENT,
                     'Input "instance_map" has shape [1, 16, 16] but signature "serving_default" expects [-1, 32, 32]')
        expect_error(lambda: stub.Predict(make_request(label_map=labels, instance_map=instances[:, :, :16])),
                     Code.INVALID_ARGUMENT, "expects [-1, 32, 32]")
        expect_error(lambda: stub.Predict(make_request(signature="with_z", label_map=labels, instance_map=instances,
                                                       z=np.full((1, 256), np.nan, np.float32))),
                     Code.INVALID_ARGUMENT, 'Input "z" holds NaN')


def test_wide_model_sizes_follow_spade_aspect_rule(tmp_path):
    """aspect_ratio 2: height = 8 x round(width / 8 / 2); what the server lets through, the graph runs."""
    write_standin_model(tmp_path, 1, size=(32, 64))
    with running(model_base_path=tmp_path, enable_batching=False, file_system_poll_wait_seconds=0) as (_, stub, _m):
        for height, width in [(16, 32), (32, 64), (16, 24), (48, 96)]:  # 24: round(1.5) = 2 blocks
            out = image_of(stub.Predict(make_request(label_map=np.zeros((1, height, width), np.uint8))))
            assert out.shape == (1, height, width, 3)
        for height, width in [(32, 32), (24, 32), (64, 32)]:
            expect_error(lambda: stub.Predict(make_request(label_map=np.zeros((1, height, width), np.uint8))),
                         Code.INVALID_ARGUMENT, f"for width {width} the height must be {8 * round(width / 16)}")


def test_hot_reload_latest_version_and_failed_versions(tmp_path):
    write_standin_model(tmp_path, 1)
    with running(model_base_path=tmp_path, file_system_poll_wait_seconds=0.1) as (_, stub, model_stub):
        assert stub.Predict(make_request(label_map=GOOD)).model_spec.version.value == 1
        write_standin_model(tmp_path, 2)
        wait_for(lambda: status_of(model_stub).get(1, (None,))[0] == State.END)
        assert status_of(model_stub) == {1: (State.END, 0, ""), 2: (State.AVAILABLE, 0, "")}
        assert stub.Predict(make_request(label_map=GOOD)).model_spec.version.value == 2
        expect_error(lambda: stub.Predict(make_request(version=1, label_map=GOOD)), Code.NOT_FOUND,
                     "Specific(spade, 1)")

        broken = tmp_path / ".tmp-3"
        broken.mkdir()
        (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
        broken.rename(tmp_path / "3")
        (tmp_path / "not-a-version").mkdir()
        wait_for(lambda: 3 in status_of(model_stub) and status_of(model_stub)[3][0] == State.END)
        state, code, message = status_of(model_stub)[3]
        assert code != 0 and str(tmp_path / "3") in message
        assert status_of(model_stub)[2][0] == State.AVAILABLE
        assert stub.Predict(make_request(label_map=GOOD)).model_spec.version.value == 2

        write_standin_model(tmp_path, 4)
        wait_for(lambda: status_of(model_stub).get(4, (None,))[0] == State.AVAILABLE)
        assert stub.Predict(make_request(label_map=GOOD)).model_spec.version.value == 4


def model_config(base, policy, labels=()):
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add(name="spade", base_path=str(base), model_platform="tensorflow")
    text_format.Parse(policy, entry.model_version_policy)
    for label, version in labels:
        entry.version_labels[label] = version
    return config


def test_config_file_keeps_two_versions_with_labels_and_reloads(tmp_path):
    base = tmp_path / "spade"
    write_standin_model(base, 1)
    config_file = tmp_path / "models.config"
    config_file.write_text(text_format.MessageToString(model_config(base, "latest { num_versions: 2 }",
                                                                    [("stable", 1)])))
    with running(model_config_file=config_file, file_system_poll_wait_seconds=0.1) as (_, stub, model_stub):
        assert stub.Predict(make_request(label="stable", label_map=GOOD)).model_spec.version.value == 1
        write_standin_model(base, 2)
        wait_for(lambda: status_of(model_stub).get(2, (None,))[0] == State.AVAILABLE)
        assert stub.Predict(make_request(label_map=GOOD)).model_spec.version.value == 2
        assert stub.Predict(make_request(version=1, label_map=GOOD)).model_spec.version.value == 1
        assert stub.Predict(make_request(label="stable", label_map=GOOD)).model_spec.version.value == 1

        reload = model_management_pb2.ReloadConfigRequest(
            config=model_config(base, "latest { num_versions: 2 }", [("stable", 1), ("canary", 2)]))
        assert model_stub.HandleReloadConfigRequest(reload).status.error_code == 0
        assert stub.Predict(make_request(label="canary", label_map=GOOD)).model_spec.version.value == 2
        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = "spade"
        status_request.model_spec.version_label = "canary"
        assert [s.version for s in model_stub.GetModelStatus(status_request).model_version_status] == [2]

        bad = model_management_pb2.ReloadConfigRequest(
            config=model_config(base, "latest { num_versions: 2 }", [("stable", 5)]))
        expect_error(lambda: model_stub.HandleReloadConfigRequest(bad), Code.FAILED_PRECONDITION,
                     "Request to assign label to version 5 of model spade, which is not currently available")
        assert stub.Predict(make_request(label="canary", label_map=GOOD)).model_spec.version.value == 2
        expect_error(lambda: model_stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest()),
                     Code.INVALID_ARGUMENT, "Only ModelConfigList is currently supported")
        missing = model_management_pb2.ReloadConfigRequest(config=model_config(tmp_path / "nope", "all {}"))
        expect_error(lambda: model_stub.HandleReloadConfigRequest(missing), Code.INVALID_ARGUMENT,
                     "Could not find base path")

        only_one = model_management_pb2.ReloadConfigRequest(config=model_config(base, "specific { versions: 1 }"))
        model_stub.HandleReloadConfigRequest(only_one)
        assert stub.Predict(make_request(label_map=GOOD)).model_spec.version.value == 1
        expect_error(lambda: stub.Predict(make_request(label="canary", label_map=GOOD)), Code.INVALID_ARGUMENT,
                     "Unrecognized servable version label: canary")


def test_config_file_polling_applies_changes_and_keeps_serving_through_bad_ones(tmp_path, caplog):
    base = tmp_path / "spade"
    write_standin_model(base, 1)
    write_standin_model(base, 2)
    config_file = tmp_path / "models.config"
    config_file.write_text(text_format.MessageToString(model_config(base, "specific { versions: 1 }")))
    with running(model_config_file=config_file, model_config_file_poll_wait_seconds=0.1, enable_batching=False,
                 file_system_poll_wait_seconds=0) as (_, stub, model_stub):
        assert stub.Predict(make_request(label_map=GOOD)).model_spec.version.value == 1
        config_file.write_text(text_format.MessageToString(
            model_config(base, "specific { versions: 2 }", [("stable", 2)])))
        wait_for(lambda: status_of(model_stub) == {1: (State.END, 0, ""), 2: (State.AVAILABLE, 0, "")})
        assert stub.Predict(make_request(label="stable", label_map=GOOD)).model_spec.version.value == 2

        config_file.write_text("model_config_list { config { name: ")
        wait_for(lambda: f"cannot read model config file {config_file}" in caplog.text)
        config_file.write_text(text_format.MessageToString(model_config(tmp_path / "nope", "all {}")))
        wait_for(lambda: "Could not find base path" in caplog.text)
        config_file.unlink()
        wait_for(lambda: "No such file" in caplog.text)
        assert stub.Predict(make_request(label="stable", label_map=GOOD)).model_spec.version.value == 2
        assert status_of(model_stub)[2] == (State.AVAILABLE, 0, "")


def test_flags_default_to_serve_config_and_a_config_file_sets_them(tmp_path, capsys):
    assert server_module.parse_args([]) == ServeConfig()
    assert server_module.parse_args(["--config", "synthetic"]) == ServeConfig()
    stock = server_module.parse_args([  # a tensorflow_model_server command line
        "--port=8500", "--rest_api_port=8501", "--model_name=spade", "--model_base_path=/models/spade",
        "--model_config_file_poll_wait_seconds=60", "--file_system_poll_wait_seconds=2", "--enable_batching=false"])
    assert (stock.rest_api_port, stock.model_base_path, stock.model_config_file_poll_wait_seconds,
            stock.file_system_poll_wait_seconds, stock.enable_batching) == (8501, "/models/spade", 60.0, 2.0, False)

    preset = tmp_path / "serving.yaml"
    preset.write_text(yaml.safe_dump({"serve": {"port": 9000, "rest_api_port": 9001, "max_batch_size": 4,
                                                "enable_batching": False}}))
    config = server_module.parse_args(["--config", str(preset), "serve.max_batch_size=16", "--port", "8500"])
    assert (config.port, config.rest_api_port, config.max_batch_size, config.enable_batching) == (8500, 9001, 16, False)

    for argv, message in [(["model.ngf=4"], "the server reads only the serve section"),
                          (["serve.prot=1"], "unknown config key 'serve.prot'"),
                          (["--config", "nope"], "no preset named 'nope'"),
                          (["--max_batch_size", "0"], "'serve.max_batch_size' must be >= 1; got 0")]:
        with pytest.raises(SystemExit) as info:
            server_module.parse_args(argv)
        assert info.value.code == 2 and message in capsys.readouterr().err


def test_max_batch_size_flag_without_a_batching_file(base):
    with running(model_base_path=base, max_batch_size=2, file_system_poll_wait_seconds=0) as (server, stub, _):
        expect_error(lambda: stub.Predict(make_request(label_map=labels_image(3, 8, 8))), Code.INVALID_ARGUMENT,
                     "Task size 3 is larger than maximum batch size 2")
        assert image_of(stub.Predict(make_request(label_map=labels_image(2, 8, 8)))).shape[0] == 2


def test_start_errors_are_clear(tmp_path):
    with pytest.raises(ServingError, match="Could not find base path"):
        ModelServer(model_base_path=tmp_path / "nope", port=0).start()
    with pytest.raises(ValueError, match="--model_base_path"):
        ModelServer(port=0)
    (tmp_path / "bad.txt").write_text("max_batch_size: {")
    with pytest.raises(ValueError, match="bad.txt"):
        ModelServer(model_base_path=tmp_path, batching_parameters_file=tmp_path / "bad.txt")
    assert server_module.main(["--model_base_path", str(tmp_path / "nope"), "--port", "0"]) == 1
    with pytest.raises(ValueError, match="--port and --rest_api_port are both 9000"):
        ModelServer(model_base_path=tmp_path, port=9000, rest_api_port=9000)
    with pytest.raises(TypeError, match="rest_port"):
        ModelServer(model_base_path=tmp_path, rest_port=8501)


@contextlib.contextmanager
def server_process(*flags):
    """`python -m serving.server --port 0 *flags` in a subprocess: (process, gRPC stub); killed if still running."""
    process = subprocess.Popen([sys.executable, "-m", "serving.server", "--port", "0", *flags],
                               cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in process.stderr:
            found = re.search(r"Running gRPC ModelServer at 127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port, "the server did not report its port"
        threading.Thread(target=process.stderr.read, daemon=True).start()  # keep the pipe drained
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield process, prediction_service_pb2_grpc.PredictionServiceStub(channel)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_subprocess_stops_gracefully_on_sigterm(base, tmp_path):
    """A request waiting in a 3 s batch window when SIGTERM arrives still completes; exit code 0."""
    params = write_batching(tmp_path / "batching.txt", max_batch_size=8, batch_timeout_micros=3000000)
    with server_process("--model_base_path", str(base), "--batching_parameters_file", str(params),
                        "--enable_batching=true") as (process, stub):
        request = make_request(signature="with_seed", label_map=GOOD, seed=np.array([3]))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(stub.Predict, request, timeout=20)
            time.sleep(1.0)
            assert not in_flight.done()
            process.send_signal(signal.SIGTERM)
            response = in_flight.result()
        np.testing.assert_array_equal(image_of(response)[0], PALETTE[GOOD[0]] + seeded_noise(3, 32, 32))
        assert process.wait(timeout=20) == 0


@pytest.mark.slow
@pytest.mark.parametrize("batching", ["true", "false"])
def test_sigterm_stops_within_the_grace_period_while_a_computation_runs(tmp_path, batching):
    """A request computing for 60 s when SIGTERM arrives is answered UNAVAILABLE once the 2 s grace period is
    over, and the process exits 0 within grace + 1 s instead of waiting for the computation."""
    write_slow_model(tmp_path)
    grace = 2.0
    with server_process("--model_base_path", str(tmp_path), "--grace_seconds", str(grace),
                        f"--enable_batching={batching}") as (process, stub):
        request = make_request(label_map=labels_image(1, 768, 768), milliseconds=np.array([60_000]))
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(stub.Predict, request, timeout=120)
            time.sleep(1.5)
            assert not in_flight.done()  # computing
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 0
            exit_seconds = time.monotonic() - sent
            with pytest.raises(grpc.RpcError) as error:
                in_flight.result()
    assert exit_seconds < grace + 1.0, f"exited {exit_seconds:.2f} s after SIGTERM, grace {grace} s"
    assert exit_seconds >= grace * 0.9  # it did give the request its grace period
    assert error.value.code() == Code.UNAVAILABLE, error.value.details()
    assert "grace period of 2 s over" in error.value.details()


def test_deployment_files_parse_with_the_real_protos_and_agree():
    config = text_format.Parse((SERVING / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    [model] = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("spade", "/models/spade", "tensorflow")
    assert model.model_version_policy.WhichOneof("policy_choice") == "specific"
    assert set(model.version_labels.values()) <= set(model.model_version_policy.specific.versions)

    params = batching.read_batching_parameters(SERVING / "batching_parameters.txt")
    assert params.max_batch_size.value >= 1 and params.num_batch_threads.value >= 1
    assert params.max_enqueued_batches.value >= 1 and params.HasField("batch_timeout_micros")
    batching.BatchScheduler(params).close()  # values our server accepts too

    compose = yaml.safe_load((SERVING / "docker-compose.yml").read_text())
    [service] = compose["services"].values()
    assert service["image"].startswith("tensorflow/serving")
    assert {"8500:8500", "8501:8501"} <= set(service["ports"])
    mounts = {}
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = (SERVING / source).resolve()
    assert mounts[model.base_path] == REPO / "exports" / "spade"
    flags = dict(flag.lstrip("-").split("=", 1) for flag in service["command"])
    assert flags["enable_batching"] == "true"
    for flag, local in [("model_config_file", "models.config"),
                        ("batching_parameters_file", "batching_parameters.txt")]:
        assert mounts[flags[flag]] == SERVING / local


def test_batching_parameters_read_like_tf_serving(tmp_path):
    path = tmp_path / "batching.txt"
    path.write_text("# comment\nmax_batch_size { value: 4 }\nallowed_batch_sizes: 2\nallowed_batch_sizes: 4\n"
                    'thread_pool_name { value: "spade_batches" }\n')
    params = batching.read_batching_parameters(path)
    assert params.max_batch_size.value == 4 and list(params.allowed_batch_sizes) == [2, 4]
    assert not params.HasField("batch_timeout_micros")
    path.write_text("max_batch_size { value: 4 }\nallowed_batch_sizes: 3\n")
    with pytest.raises(ValueError, match="must increase and end with max_batch_size 4"):
        batching.BatchScheduler(batching.read_batching_parameters(path))
    path.write_text("max_batchsize { value: 4 }\n")
    with pytest.raises(ValueError, match="no field named \"max_batchsize\""):
        batching.read_batching_parameters(path)


def test_batch_scheduler_pads_to_allowed_sizes_and_splits():
    params = batching.batching_parameters_class()(allowed_batch_sizes=[4, 8])
    params.max_batch_size.value = 8
    params.batch_timeout_micros.value = 200000
    params.num_batch_threads.value = 1
    scheduler = batching.BatchScheduler(params)
    seen = []

    def double(inputs):
        seen.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}

    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(scheduler.run, "key", double, {"x": np.full((n, 2), n)}, n) for n in (1, 2, 2)]
            results = [f.result() for f in futures]
    finally:
        scheduler.close()
    for n, result in zip((1, 2, 2), results):
        np.testing.assert_array_equal(result["y"], np.full((n, 2), 2 * n))
    assert seen == [8] and scheduler.batch_sizes() == {5: 1}


def test_runtime_errors_lose_tf_python_frames():
    message = ("Graph execution error:\n\nDetected at node assert defined at (most recent call last):\n"
               '  File "/src/export.py", line 10, in serve\n    check(label_map)\n    ^^^^^^^^^^^^^^^^\n\n'
               "assertion failed: [label_map values must be < 4]\n\t [[{{node assert}}]]")
    error = from_op_error(tf.errors.InvalidArgumentError(None, None, message))
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == "assertion failed: [label_map values must be < 4]\n\t [[{{node assert}}]]"
    plain = from_op_error(tf.errors.ResourceExhaustedError(None, None, "OOM when allocating"))
    assert (plain.code, plain.message) == (Code.RESOURCE_EXHAUSTED, "OOM when allocating")


def test_server_options_are_checked_as_the_config_checks_them(base):
    from spade_tf.config import ConfigError

    for flags, message in [({"max_pixels": 0}, "'serve.max_pixels' must be >= 1; got 0"),
                           ({"rest_api_max_body_bytes": -1}, "'serve.rest_api_max_body_bytes' must be >= 1; got -1"),
                           ({"max_batch_size": "8"}, "'serve.max_batch_size' must be of type int")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            server_module.ModelServer(model_base_path=str(base), **flags)


def test_stopping_does_not_wait_for_a_model_load_in_progress(tmp_path, monkeypatch):
    from serving import servables

    (tmp_path / "model" / "1").mkdir(parents=True)
    (tmp_path / "model" / "2").mkdir()
    started, release, loads = threading.Event(), threading.Event(), []

    def slow_load(name, version, path):
        loads.append(version)
        started.set()
        release.wait(60)
        raise RuntimeError("never loads")

    monkeypatch.setattr(servables, "load_servable", slow_load)
    manager = servables.ModelManager(poll_wait_seconds=0.05)
    manager.set_config(model_server_config_pb2.ModelConfigList())
    manager._models["m"] = servables._Model(servables.config_for_model("m", tmp_path / "model").config[0])
    manager.start_polling()
    assert started.wait(30)
    begin = time.monotonic()
    manager.stop(timeout=0.5)
    took = time.monotonic() - begin
    release.set()
    time.sleep(0.3)  # the poller finishes the load it was in, and starts no other
    assert took < 3, f"stop waited {took:.1f} s for a model load in progress"
    assert loads == [2]
