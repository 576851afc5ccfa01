"""TF Serving's REST routes (`model_servers/http_rest_api_handler.cc`, `http_rest_api_util.cc`).

    POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict   {"instances": [...]} or {"inputs": ...}
    GET  /v1/models/<name>[/versions/<v>|/labels/<l>]            model status
    GET  /v1/models/<name>[/versions/<v>|/labels/<l>]/metadata   signature_def

A predict request's JSON becomes tensors of the signature's input dtypes (`json_tensor`), then runs
exactly as a gRPC Predict (same checks, same batching); an error answers `{"error": "<message>"}`
with the HTTP status TF Serving maps its code to.
"""

import logging
import re
import urllib.parse

import grpc
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2, predict_pb2

from serving.errors import ServingError, internal_error, truncated
from serving.predict import DEFAULT_SIGNATURE
from serving.rest.json_tensor import json_text, parse_json, request_arrays, response_json

log = logging.getLogger(__name__)

_Code = grpc.StatusCode
_INVALID = _Code.INVALID_ARGUMENT

# http_rest_api_util.cc's two route regexes, matched against the whole path, within the handled prefix
_API = re.compile(r"/v1/.*", re.I | re.S)
_PREDICT = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(classify|regress|predict)", re.I)
_STATUS = re.compile(r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/([^/:]+))?(?:/(metadata))?", re.I)

# TF Serving's HTTP status per gRPC code (model_servers/http_server.cc); any other code is 500
HTTP_STATUS = {_Code.INVALID_ARGUMENT: 400, _Code.FAILED_PRECONDITION: 400, _Code.OUT_OF_RANGE: 400,
               _Code.NOT_FOUND: 404, _Code.DEADLINE_EXCEEDED: 504, _Code.RESOURCE_EXHAUSTED: 429,
               _Code.UNIMPLEMENTED: 501, _Code.UNAVAILABLE: 503, _Code.UNAUTHENTICATED: 401,
               _Code.PERMISSION_DENIED: 403, _Code.ALREADY_EXISTS: 409, _Code.ABORTED: 409, _Code.CANCELLED: 499}

_MAX_INT64 = 2**63 - 1


class RestApi:
    """Answers one REST request: `handle(method, path, body) -> (HTTP status, JSON-able object)`.

    `prediction` and `models` are the server's gRPC servicers; their plain methods (`predict`,
    `get_model_metadata`, `classify`, `regress`, `get_model_status`) do the work.
    """

    def __init__(self, prediction, models):
        self._prediction, self._models = prediction, models

    def handle(self, method, path, body):
        try:
            return 200, self._route(method, urllib.parse.urlsplit(path).path, body)
        except RecursionError:
            error = ServingError(_INVALID, "JSON Parse error: the document nests lists or objects too deeply")
        except ServingError as e:
            log.info("REST %s %s -> %s: %s", method, path, e.code.name, e.message)
            error = e
        except Exception as e:  # noqa: BLE001 - never send a traceback to the client
            log.exception("REST %s %s failed", method, path)
            error = internal_error(f"{method} {path}", e)
        return HTTP_STATUS.get(error.code, 500), {"error": truncated(error.message)}

    def _route(self, method, path, body):
        if not _API.fullmatch(path):
            raise ServingError(_Code.NOT_FOUND, f"Not found: {path} (the REST API is under /v1/models/)")
        found = method == "POST" and _PREDICT.fullmatch(path) or method == "GET" and _STATUS.fullmatch(path)
        if not found:
            raise ServingError(_INVALID, f"Malformed request: {method} {path}")
        name, version, label, action = found.groups()
        if method == "GET" and not name:
            raise ServingError(_INVALID, "Missing model name in request.")
        spec = _model_spec(name, version, label)
        if method == "GET":
            return self._metadata(spec) if action else self._status(spec)
        if action == "predict":
            return self._predict(spec, body)
        if action == "classify":
            return self._prediction.classify(None)
        if action == "regress":
            return self._prediction.regress(None)
        # as in TF Serving, `:PREDICT` matches the case-insensitive route but names no method
        raise ServingError(_INVALID, f"Malformed request: {method} {path}")

    def _status(self, spec):
        response = self._models.get_model_status(get_model_status_pb2.GetModelStatusRequest(model_spec=spec))
        return _proto_dict(response)

    def _metadata(self, spec):
        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec, metadata_field=["signature_def"])
        response = self._prediction.get_model_metadata(request)
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_defs)
        return {"model_spec": _proto_dict(response.model_spec),
                "metadata": {"signature_def": _proto_dict(signature_defs)}}

    def _predict(self, spec, body):
        doc = parse_json(body)
        signature_name = doc.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise ServingError(_INVALID, f"JSON Value: {json_text(doc)} not formatted correctly. 'signature_name' "
                                         "key must be a string value.")
        spec.signature_name = signature_name
        signature_defs = self._prediction.manager.resolve(spec).signature_defs
        key = signature_name or DEFAULT_SIGNATURE
        if key not in signature_defs:
            raise ServingError(_INVALID, f'Serving signature name: "{key}" not found in signature def')
        inputs = signature_defs[key].inputs
        if not inputs:
            raise ServingError(_INVALID, f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
        arrays, row_format = request_arrays(doc, inputs)

        request = predict_pb2.PredictRequest(model_spec=spec)
        for alias, array in arrays.items():
            request.inputs[alias].CopyFrom(tf.make_tensor_proto(array, dtype=inputs[alias].dtype))
        response = self._prediction.predict(request)
        outputs = {alias: tf.make_ndarray(tensor) for alias, tensor in sorted(response.outputs.items())}
        return response_json(outputs, row_format)


def _model_spec(name, version, label):
    spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name))
    if version is not None:
        if int(version) > _MAX_INT64:
            raise ServingError(_INVALID, f"Failed to convert version: {version} to numeric.")
        spec.version.value = int(version)
    if label is not None:
        spec.version_label = urllib.parse.unquote(label)
    return spec


def _proto_dict(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)
