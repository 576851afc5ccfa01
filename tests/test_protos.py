"""The light client's protos (client/spade_tf_client/protos): current, and byte-compatible with TF Serving's."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
GENERATOR = REPO / "client" / "scripts" / "generate_protos.py"


def run(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


# protoc runs in a process of its own: grpc_tools' protoc crashed (segmentation fault) inside the test
# process, where TensorFlow and protobuf's C++ runtime are loaded.

def test_generated_code_is_current():
    pytest.importorskip("grpc_tools")  # pinned in requirements-test.txt
    result = run(GENERATOR, "--check")
    assert result.returncode == 0, result.stderr


def test_stale_code_is_found(tmp_path):
    pytest.importorskip("grpc_tools")
    proto_dir = tmp_path / "spade_tf_client" / "protos"
    proto_dir.mkdir(parents=True)
    for proto in (REPO / "client" / "spade_tf_client" / "protos").glob("*"):
        if proto.is_file():
            (proto_dir / proto.name).write_bytes(proto.read_bytes())
    tensor = proto_dir / "tensor.proto"
    tensor.write_text(tensor.read_text().replace("bytes float8_val = 18;", "bytes float8_val = 18;\n  int32 extra = 19;"))
    result = run(GENERATOR, "--check", "--client_dir", tmp_path)
    assert result.returncode == 1 and "stale generated modules: tensor_pb2.py" in result.stderr, result.stderr


@pytest.mark.parametrize("writer, reader", [("light", "tf"), ("tf", "light")])
def test_messages_cross_between_the_light_client_and_tensorflow_serving_api(tmp_path, writer, reader):
    """Each side in its own process: requests, responses, metadata and status parse into the same contents."""
    for action, side in (("write", writer), ("read", reader)):
        result = run(REPO / "tests" / "proto_interop.py", action, side, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    assert f"{reader} read {writer}'s messages: ok" in result.stdout


def test_both_sets_of_messages_load_in_one_process():
    """The client's messages live in their own descriptor pool: the server's process (TensorFlow) loads them too."""
    code = ("import tensorflow_serving.apis.predict_pb2 as tf_predict\n"
            "from spade_tf_client.protos import predict_pb2, POOL\n"
            "from google.protobuf import descriptor_pool\n"
            "assert predict_pb2.PredictRequest.DESCRIPTOR.full_name == tf_predict.PredictRequest.DESCRIPTOR.full_name\n"
            "assert descriptor_pool.Default().FindMessageTypeByName('tensorflow.serving.PredictRequest')"
            " is tf_predict.PredictRequest.DESCRIPTOR\n"
            "assert POOL.FindMessageTypeByName('tensorflow.serving.PredictRequest') is predict_pb2.PredictRequest.DESCRIPTOR\n"
            "print('ok')\n")
    result = run("-c", code)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
