"""Run as a script by tests/test_protos.py, in a process of its own per side (never both in one process):

    python tests/proto_interop.py write light|tf DIR   # serialise the messages below with one side's classes
    python tests/proto_interop.py read light|tf DIR    # parse the other side's bytes and check their contents

"light" is the light client's protos (spade_tf_client.protos, no TensorFlow), "tf" tensorflow-serving-api's.
"""

import pathlib
import sys

import numpy as np

INPUTS = {"label_map": np.arange(24, dtype=np.uint8).reshape(1, 4, 6), "seed": np.array([3], np.int64),
          "z": np.linspace(-1, 1, 6, dtype=np.float32).reshape(1, 6),
          "instance_map": np.array([[[-5, 2**31 - 1]]], np.int32)}


def classes(side):
    if side == "light":
        from spade_tf_client import tensors
        from spade_tf_client.protos import get_model_metadata_pb2 as metadata, get_model_status_pb2 as status
        from spade_tf_client.protos import predict_pb2 as predict, types_pb2 as types
        return predict, metadata, status, types, tensors.make_tensor_proto, tensors.make_ndarray
    import tensorflow as tf
    from tensorflow.core.framework import types_pb2 as types
    from tensorflow_serving.apis import get_model_metadata_pb2 as metadata, get_model_status_pb2 as status
    from tensorflow_serving.apis import predict_pb2 as predict
    return predict, metadata, status, types, tf.make_tensor_proto, tf.make_ndarray


def write(side, folder):
    predict, metadata, status, types, to_proto, _ = classes(side)
    request = predict.PredictRequest(output_filter=["image"])
    request.model_spec.name, request.model_spec.signature_name = "spade", "with_seed"
    request.model_spec.version.value = 7
    for alias, array in INPUTS.items():
        request.inputs[alias].CopyFrom(to_proto(array))
    response = predict.PredictResponse(outputs={"image": to_proto(np.full((1, 4, 6, 3), 200, np.uint8))})
    response.model_spec.name, response.model_spec.version_label = "spade", "stable"
    defs = metadata.SignatureDefMap()
    info = defs.signature_def["with_seed"].inputs["label_map"]
    info.name, info.dtype = "with_seed_label_map:0", types.DT_UINT8
    for size in (-1, -1, 5):
        info.tensor_shape.dim.add(size=size)
    defs.signature_def["with_seed"].outputs["image"].tensor_shape.unknown_rank = True
    defs.signature_def["with_seed"].method_name = "tensorflow/serving/predict"
    meta = metadata.GetModelMetadataResponse()
    meta.model_spec.name = "spade"
    meta.model_spec.version.value = 2
    meta.metadata["signature_def"].Pack(defs)
    state = status.GetModelStatusResponse()
    state.model_version_status.add(version=2, state=status.ModelVersionStatus.AVAILABLE)
    failed = state.model_version_status.add(version=3, state=status.ModelVersionStatus.END)
    failed.status.error_code, failed.status.error_message = 3, "bad model"
    for name, message in (("request", request), ("response", response), ("metadata", meta), ("status", state)):
        (folder / f"{side}.{name}").write_bytes(message.SerializeToString())


def read(side, folder):
    predict, metadata, status, types, _, to_array = classes(side)
    other = "tf" if side == "light" else "light"
    request = predict.PredictRequest.FromString((folder / f"{other}.request").read_bytes())
    assert (request.model_spec.name, request.model_spec.signature_name) == ("spade", "with_seed")
    assert request.model_spec.version.value == 7 and list(request.output_filter) == ["image"]
    assert sorted(request.inputs) == sorted(INPUTS)
    for alias, array in INPUTS.items():
        got = to_array(request.inputs[alias])
        assert got.dtype == array.dtype and got.shape == array.shape and (got == array).all(), alias
    response = predict.PredictResponse.FromString((folder / f"{other}.response").read_bytes())
    assert response.model_spec.version_label == "stable" and response.model_spec.WhichOneof("version_choice")
    image = to_array(response.outputs["image"])
    assert image.dtype == np.uint8 and image.shape == (1, 4, 6, 3) and (image == 200).all()
    meta = metadata.GetModelMetadataResponse.FromString((folder / f"{other}.metadata").read_bytes())
    assert meta.model_spec.name == "spade" and meta.model_spec.version.value == 2
    defs = metadata.SignatureDefMap()
    assert meta.metadata["signature_def"].Unpack(defs)
    info = defs.signature_def["with_seed"].inputs["label_map"]
    assert info.name == "with_seed_label_map:0" and info.dtype == types.DT_UINT8
    assert [d.size for d in info.tensor_shape.dim] == [-1, -1, 5]
    assert defs.signature_def["with_seed"].outputs["image"].tensor_shape.unknown_rank
    assert defs.signature_def["with_seed"].method_name == "tensorflow/serving/predict"
    state = status.GetModelStatusResponse.FromString((folder / f"{other}.status").read_bytes())
    assert [(s.version, status.ModelVersionStatus.State.Name(s.state)) for s in state.model_version_status] == [
        (2, "AVAILABLE"), (3, "END")]
    assert state.model_version_status[1].status.error_code == 3
    assert state.model_version_status[1].status.error_message == "bad model"
    assert ("tensorflow" in sys.modules) == (side == "tf"), "the light side must not load TensorFlow"
    print(f"{side} read {other}'s messages: ok")


if __name__ == "__main__":
    action, side, folder = sys.argv[1:4]
    {"write": write, "read": read}[action](side, pathlib.Path(folder))
