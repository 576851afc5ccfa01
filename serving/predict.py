"""Predict on one loaded servable.

Checks run in TF Serving's order and with its messages (`servables/tensorflow/predict_util.cc`, TF's
`GetInputValues` and `FunctionCallFrame::SetArgs`): signature, input count, input keys and parsing
(after the request size limit, ours), dtypes. Then, beyond TF Serving, shapes against the signature,
the `assets.extra/labels.json` rules of the export contract (`spade_tf_client.contract`: sizes, class indices), and `output_filter` (TF Serving's texts).
"""

import functools
import math

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from serving.errors import ServingError, from_op_error
from spade_tf_client.contract import ContractError, LabelsJson

DEFAULT_SIGNATURE = "serving_default"
SPATIAL_INPUTS = ("label_map", "instance_map")  # [batch, height, width]: the generator's layout

_INVALID = grpc.StatusCode.INVALID_ARGUMENT


def check_labels_json(labels: LabelsJson, inputs, where):
    """Raise INVALID_ARGUMENT when sizes or class indices break the model's rules (the export contract)."""
    try:
        for alias in SPATIAL_INPUTS:
            if alias in inputs and inputs[alias].ndim >= 3:
                labels.check_size(*inputs[alias].shape[1:3], f'Input "{alias}"', where)
        if "instance_map" in inputs and "label_map" in inputs and (
                inputs["instance_map"].shape != inputs["label_map"].shape):
            raise ContractError(f'Input "instance_map" has shape {list(inputs["instance_map"].shape)} '
                                f'but must have the shape of "label_map", {list(inputs["label_map"].shape)}')
        if "label_map" in inputs:
            labels.check_labels(inputs["label_map"], 'Input "label_map"', where)
        if "z" in inputs and not np.isfinite(inputs["z"]).all():
            raise ContractError('Input "z" holds NaN or infinite values; send finite numbers')
    except ContractError as e:
        raise ServingError(_INVALID, str(e)) from None


def predict(servable, request, *, max_pixels=None, scheduler=None):
    """Run `request` (a PredictRequest) on `servable`; raises ServingError with TF Serving's codes."""
    signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    if signature_name not in servable.signatures:
        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{signature_name}" not found.')
    signature = servable.signature_defs[signature_name]
    inputs = parse_inputs(request.inputs, signature, max_pixels)
    check_shapes(inputs, signature, signature_name)
    if servable.labels is not None:
        check_labels_json(servable.labels, inputs, f'model "{servable.name}" version {servable.version}')
    aliases = output_aliases(request.output_filter, signature)

    run = functools.partial(_run, servable.signatures[signature_name])
    size = _batch_size(inputs, signature)
    if scheduler is not None and size:
        key = (servable, signature_name, tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(inputs.items())))
        outputs = scheduler.run(key, run, inputs, size)
    else:
        outputs = run(inputs)

    response = predict_pb2.PredictResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature_name
    for alias in aliases:
        response.outputs[alias].CopyFrom(tf.make_tensor_proto(outputs[alias]))
    return response


def parse_inputs(request_inputs, signature, max_pixels):
    """TensorProtos -> arrays: count, keys, size limit, parsing, dtypes (TF Serving's checks and texts)."""
    sent, expected = sorted(request_inputs), sorted(signature.inputs)
    if len(sent) != len(expected):
        raise ServingError(_INVALID, (
            f"input size does not match signature: {len(sent)}!={len(expected)} len({{{','.join(sent)}}}) != "
            f"len({{{','.join(expected)}}}). Sent extra: {{{','.join(sorted(set(sent) - set(expected)))}}}. "
            f"Missing but required: {{{','.join(sorted(set(expected) - set(sent)))}}}."))
    arrays = {}
    for alias in expected:
        if alias not in request_inputs:
            raise ServingError(_INVALID, (
                f"Signature input alias: {alias}(feed name: {signature.inputs[alias].name}) not found in request "
                f"and no default value provided. Inputs expected to be in the request {{{','.join(sent)}}}, or "
                "default input alias set: "))
        proto = request_inputs[alias]
        shape = [d.size for d in proto.tensor_shape.dim]
        if proto.tensor_shape.unknown_rank or any(d < 0 for d in shape):
            raise ServingError(_INVALID, f"tensor parsing error: {alias}")
        if max_pixels is not None:
            _check_pixels(alias, shape, max_pixels)
        try:
            arrays[alias] = tf.make_ndarray(proto)
        except Exception:  # noqa: BLE001 - any malformed TensorProto is the client's parse error
            raise ServingError(_INVALID, f"tensor parsing error: {alias}") from None
    for i, alias in enumerate(expected):
        want, got = signature.inputs[alias].dtype, request_inputs[alias].dtype
        if want != got:
            raise ServingError(_INVALID, f"Expects arg[{i}] to be {dtype_name(want)} but {dtype_name(got)} "
                                         "is provided")
    return arrays


def check_shapes(inputs, signature, signature_name):
    """Ranks and fixed sizes against the signature, and one batch size across inputs."""
    for alias, array in sorted(inputs.items()):
        spec = signature.inputs[alias].tensor_shape
        if spec.unknown_rank:
            continue
        want = [d.size for d in spec.dim]
        if array.ndim != len(want) or any(w >= 0 and w != g for w, g in zip(want, array.shape)):
            raise ServingError(_INVALID, f'Input "{alias}" has shape {list(array.shape)} but signature '
                                         f'"{signature_name}" expects {want} (-1: any size)')
    sizes = {alias: inputs[alias].shape[0] for alias in sorted(inputs) if _free_batch(signature.inputs[alias])}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{alias} {size}" for alias, size in sizes.items())
        raise ServingError(_INVALID, f"Inputs have different batch sizes (dimension 0): {listed}; "
                                     "send the same number of items in every input")


def output_aliases(output_filter, signature):
    """The outputs to return: all, or `output_filter` checked as TF Serving does."""
    if not output_filter:
        return sorted(signature.outputs)
    seen = []
    for alias in output_filter:
        if alias not in signature.outputs:
            raise ServingError(_INVALID, f"output tensor alias not found in signature: {alias} Outputs expected to "
                                         f"be in the set {{{','.join(sorted(signature.outputs))}}}.")
        if alias in seen:
            raise ServingError(_INVALID, f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen


def _run(function, inputs):
    try:
        outputs = function(**{alias: tf.constant(value) for alias, value in inputs.items()})
    except tf.errors.OpError as e:
        raise from_op_error(e) from None
    return {alias: value.numpy() for alias, value in outputs.items()}


def _check_pixels(alias, shape, max_pixels):
    if math.prod(shape[:3]) > max_pixels or math.prod(shape) > 4 * max_pixels:
        raise ServingError(_INVALID, f'Input "{alias}" of shape {shape} is over this server\'s limit '
                                     f"--max_pixels={max_pixels} (batch x height x width per input, at most 4 "
                                     "values per pixel); send smaller images or fewer per request")


def _free_batch(tensor_info):
    shape = tensor_info.tensor_shape
    return not shape.unknown_rank and len(shape.dim) >= 1 and shape.dim[0].size == -1


def _batch_size(inputs, signature):
    """The common dimension 0 when every input has a free batch dimension, else None (run unbatched)."""
    if inputs and all(_free_batch(signature.inputs[alias]) for alias in inputs):
        return next(iter(inputs.values())).shape[0]
    return None


def dtype_name(dtype_enum):
    """TF's DataTypeString: "float", "double", "half" where Python says float32/64/16."""
    try:
        name = tf.dtypes.as_dtype(dtype_enum).name
    except TypeError:
        return f"DataType({dtype_enum})"
    return {"float32": "float", "float64": "double", "float16": "half"}.get(name, name)
