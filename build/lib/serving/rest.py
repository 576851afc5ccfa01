"""TF Serving's REST API (`--rest_api_port`) on the models, checks and batching of the gRPC API.

    POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict   {"instances": [...]} or {"inputs": ...}
    GET  /v1/models/<name>[/versions/<v>|/labels/<l>]            model status
    GET  /v1/models/<name>[/versions/<v>|/labels/<l>]/metadata   signature_def

Routes, JSON formats and messages are tensorflow_model_server's (`model_servers/http_rest_api_handler.cc`,
`http_rest_api_util.cc`, `util/json_tensor.cc`). The JSON values of a predict request become tensors
of the signature's input dtypes, then the request runs exactly as a gRPC Predict (same checks, same
batching); an error answers `{"error": "<message>"}` with the HTTP status TF Serving maps its code to.
"""

import base64
import binascii
import http.server
import json
import logging
import math
import re
import socket
import socketserver
import threading
import urllib.parse

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2, predict_pb2

from serving.errors import ServingError, internal_error, truncated
from serving.predict import DEFAULT_SIGNATURE, dtype_name

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

IDLE_TIMEOUT_SECONDS = 60  # a connection that sends nothing for this long is closed

_MAX_INT64 = 2**63 - 1
_JSON_PARSE_REASONS = {  # Python's json messages -> rapidjson's, which TF Serving reports
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Extra data": "The document root must not be followed by other values.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
    "Invalid control character at": "Invalid encoding in string.",
}


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
        doc = _parse_json(body)
        signature_name = doc.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise ServingError(_INVALID, f"JSON Value: {_json_text(doc)} not formatted correctly. 'signature_name' "
                                         "key must be a string value.")
        spec.signature_name = signature_name
        signature_defs = self._prediction.manager.resolve(spec).signature_defs
        key = signature_name or DEFAULT_SIGNATURE
        if key not in signature_defs:
            raise ServingError(_INVALID, f'Serving signature name: "{key}" not found in signature def')
        inputs = signature_defs[key].inputs
        if not inputs:
            raise ServingError(_INVALID, f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
        if "instances" in doc and "inputs" in doc:
            raise ServingError(_INVALID, f"JSON Value: {_json_text(doc)} Not formatted correctly expecting only one "
                                         "of 'inputs' or 'instances' keys to exist ")
        if "instances" in doc:
            row_format = True
            arrays = _from_instances(doc, inputs)
        elif "inputs" in doc:
            row_format = False
            arrays = _from_inputs(doc["inputs"], inputs)
        else:
            raise ServingError(_INVALID, "Missing 'inputs' or 'instances' key")

        request = predict_pb2.PredictRequest(model_spec=spec)
        for alias, array in arrays.items():
            request.inputs[alias].CopyFrom(tf.make_tensor_proto(array, dtype=inputs[alias].dtype))
        response = self._prediction.predict(request)
        outputs = {alias: tf.make_ndarray(tensor) for alias, tensor in sorted(response.outputs.items())}
        return _predictions(outputs) if row_format else _outputs(outputs)


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


# --- JSON -> tensors (util/json_tensor.cc's rules and messages) -------------------------------------

def _parse_json(body):
    """The request body as a JSON object."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ServingError(_INVALID, f"JSON Parse error: Invalid encoding in string. at offset: {e.start}") from None
    if not text.strip():
        raise ServingError(_INVALID, "JSON Parse error: The document is empty")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        reason = _JSON_PARSE_REASONS.get(e.msg, e.msg)
        raise ServingError(_INVALID, f"JSON Parse error: {reason} at offset: {e.pos}") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise ServingError(_INVALID, f"JSON Parse error: {e}") from None
    if not isinstance(doc, dict):
        raise ServingError(_INVALID, f"JSON Value: {_json_text(doc)} Is not object")
    return doc


def _from_instances(doc, infos):
    """Row format: one JSON value (one input) or object (named inputs) per batch item, stacked on dimension 0."""
    items = doc["instances"]
    if not isinstance(items, list):
        raise ServingError(_INVALID, f"JSON Value: {_json_text(doc)} Excepting 'instances' to be an list/array")
    if not items:
        raise ServingError(_INVALID, f"JSON Value: {_json_text(doc)} No values in 'instances' array")
    if not isinstance(items[0], dict) and len(infos) > 1:
        raise ServingError(_INVALID, "instances is a plain list, but expecting list of objects as multiple input "
                                     "tensors required as per tensorinfo_map")
    objects = _is_named_object(items[0])
    names = sorted(infos)
    rows = {}

    def add(name, value):
        if name not in infos:
            raise ServingError(_INVALID, f"JSON object: does not have named input: {name}")
        array = _tensor(value, infos[name].dtype)
        if name not in rows:
            rows[name] = [array]
        elif rows[name][0].size != array.size:
            raise ServingError(_INVALID, f"Expecting tensor size: {rows[name][0].size} but got: {array.size}")
        elif rows[name][0].shape != array.shape:
            raise ServingError(_INVALID, f"Expecting shape {_shape_text(rows[name][0].shape)} but got: "
                                         f"{_shape_text(array.shape)}")
        else:
            rows[name].append(array)

    for i, item in enumerate(items):
        if objects:
            if not _is_named_object(item):
                raise ServingError(_INVALID, f"Expecting object but got list at item {i} of input list")
            for key, value in item.items():
                try:
                    add(key, value)
                except ServingError as e:
                    raise ServingError(_INVALID, f"Failed to process element: {i} key: {key} of 'instances' list. "
                                                 f"Error: {_status_text(e)}") from None
            if sorted(item) != names:
                raise ServingError(_INVALID, f"Failed to process element: {i} of 'instances' list. JSON object: "
                                             f"{_json_text(item)} keys must be equal to: {','.join(names)}")
        else:
            if _is_named_object(item):
                raise ServingError(_INVALID, f"Expecting value/list but got object at item {i} of input list")
            try:
                add(names[0], item)
            except ServingError as e:
                raise ServingError(_INVALID, f"Failed to process element: {i} of 'instances' list. Error: "
                                             f"{_status_text(e)}") from None
    return {name: np.stack(arrays) for name, arrays in rows.items()}


def _from_inputs(value, infos):
    """Columnar format: the whole tensor (one input) or an object of them (named inputs); extra keys are ignored."""
    if not _is_named_object(value):
        if len(infos) > 1:
            raise ServingError(_INVALID, "inputs is a plain value/list, but expecting an object as multiple input "
                                         "tensors required as per tensorinfo_map")
        [name] = infos
        return {name: _tensor(value, infos[name].dtype)}
    arrays = {}
    for name in sorted(infos):
        if name not in value:
            raise ServingError(_INVALID, f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = _tensor(value[name], infos[name].dtype)
    return arrays


def _tensor(value, dtype_enum):
    """A nested JSON list (or scalar) as an array of the signature's dtype; the shape follows the first items."""
    kind = _LeafKind(dtype_enum)
    shape = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    leaves = []
    _fill(value, 0, shape, kind, leaves)
    return np.array(leaves, dtype=kind.numpy_dtype).reshape(shape)


def _fill(value, level, shape, kind, leaves):
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise ServingError(_INVALID, f"JSON Value: {_json_text(value)} found at incorrect level: {level + 1} in "
                                         f"the JSON DOM. Expected at level: {rank}")
        leaves.append(kind.convert(value))
        return
    if level >= rank:
        raise ServingError(_INVALID, f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise ServingError(_INVALID, f"Encountered list at unexpected size: {len(value)} at level: {level} "
                                     f"expected size: {shape[level]}")
    if level == rank - 1 and all(map(kind.accepts, value)):  # the fast path: a row of valid numbers
        leaves.extend(value)
        return
    for item in value:
        _fill(item, level + 1, shape, kind, leaves)


class _LeafKind:
    """What a JSON leaf may be for one dtype: ints in the dtype's range, lossless numbers for floats, ..."""

    def __init__(self, dtype_enum):
        self.dtype_enum = dtype_enum
        self.numpy_dtype = object
        self.accepts = lambda v: False
        try:
            dtype = tf.dtypes.as_dtype(dtype_enum)
        except TypeError:
            dtype = None
        if dtype is None or dtype in (tf.half, tf.bfloat16) or not (
                dtype.is_integer or dtype.is_floating or dtype.is_bool or dtype == tf.string):
            self.convert = self._unimplemented  # as TF Serving: no JSON conversion to this type
            return
        self.numpy_dtype = dtype.as_numpy_dtype
        if dtype.is_integer:
            low, high = dtype.min, dtype.max
            self.accepts = lambda v: type(v) is int and low <= v <= high
            self.convert = self._checked
        elif dtype.is_floating:
            max_int = 2 ** np.finfo(self.numpy_dtype).nmant * 2 - 1  # largest integer every smaller one is exact
            largest = float(np.finfo(self.numpy_dtype).max)
            self.accepts = lambda v: ((type(v) is float and not largest < abs(v) < math.inf)
                                      or (type(v) is int and -max_int <= v <= max_int))
            self.convert = self._lossless
        elif dtype.is_bool:
            self.accepts = lambda v: type(v) is bool
            self.convert = self._checked
        else:
            self.convert = self._string

    def _type_error(self, value):
        return ServingError(_INVALID, f"JSON Value: {_json_text(value)} Type: {_json_type(value)} is not of "
                                      f"expected type: {dtype_name(self.dtype_enum)}")

    def _checked(self, value):
        if not self.accepts(value):
            raise self._type_error(value)
        return value

    def _lossless(self, value):
        if self.accepts(value):
            return value
        if type(value) not in (int, float):
            raise self._type_error(value)
        raise ServingError(_INVALID, f"Cannot convert JSON value: {_json_text(value)} to "
                                     f"{dtype_name(self.dtype_enum)} without loss of precision.")

    def _string(self, value):
        if isinstance(value, str):
            return value.encode("utf-8")
        if not isinstance(value, dict):
            raise self._type_error(value)
        if list(value) != ["b64"] or not isinstance(value["b64"], str):
            raise ServingError(_INVALID, f"JSON Value: {_json_text(value)} not formatted correctly for base64 data")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error:
            raise ServingError(_INVALID, "Unable to base64 decode") from None

    def _unimplemented(self, value):
        raise ServingError(_Code.UNIMPLEMENTED, f"Conversion of JSON Value: {_json_text(value)} to type: "
                                                f"{dtype_name(self.dtype_enum)}")


def _is_named_object(value):
    """A JSON object that is not a `{"b64": ...}` value."""
    return isinstance(value, dict) and not (list(value) == ["b64"] and isinstance(value["b64"], str))


def _json_type(value):
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return str(value)
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def _json_text(value, limit=200):
    """A JSON value quoted in a message, on one line and cut after `limit` characters (TF Serving quotes it whole)."""
    chunks, length = [], 0
    for chunk in json.JSONEncoder().iterencode(value):  # lazily: the value may be a whole request
        chunks.append(chunk)
        length += len(chunk)
        if length > limit:
            return "".join(chunks)[:limit] + "..."
    return "".join(chunks)


def _shape_text(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


def _status_text(error):
    """absl::Status::ToString(): "INVALID_ARGUMENT: <message>"."""
    return f"{error.code.name}: {error.message}"


# --- tensors -> JSON ---------------------------------------------------------------------------

def _predictions(outputs):
    """Row format: one value per batch item; an object of the outputs per item when there are several."""
    batch = None
    for alias, array in outputs.items():
        if array.ndim == 0:
            raise ServingError(_INVALID, f"Tensor name: {alias} has no shape information ")
        if batch is not None and array.shape[0] != batch:
            raise ServingError(_INVALID, f"Tensor name: {alias} has inconsistent batch size: {array.shape[0]} "
                                         f"expecting: {batch}")
        batch = array.shape[0]
    values = {alias: _json_values(alias, array) for alias, array in outputs.items()}
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    return {"predictions": [{alias: values[alias][i] for alias in values} for i in range(batch)]}


def _outputs(outputs):
    """Columnar format: the tensor, or an object of the tensors when there are several."""
    values = {alias: _json_values(alias, array) for alias, array in outputs.items()}
    return {"outputs": next(iter(values.values())) if len(values) == 1 else values}


def _json_values(alias, array):
    """Nested lists of JSON values; float32 as its shortest decimal, bytes of `*_bytes` outputs as {"b64": ...}."""
    if array.dtype == object:
        if alias.endswith("_bytes"):
            return _map_nested(array, lambda b: {"b64": base64.b64encode(b).decode("ascii")})
        return _map_nested(array, lambda b: b.decode("utf-8", errors="replace"))
    if array.dtype.kind in "iub" or array.dtype == np.float64:
        return array.tolist()
    if array.dtype.kind == "f" or array.dtype == tf.bfloat16.as_numpy_dtype:
        shortest = [float(str(v)) for v in array.astype(np.float32).ravel()]  # 0.2f -> 0.2, not 0.200000003
        return np.array(shortest, np.float64).reshape(array.shape).tolist()
    raise ServingError(_INVALID, f"Failed to write JSON value for tensor type: {array.dtype}")


def _map_nested(array, fn):
    return np.array([fn(v) for v in array.ravel()] or [], dtype=object).reshape(array.shape).tolist()


# --- HTTP --------------------------------------------------------------------------------------

class RestApiServer(http.server.ThreadingHTTPServer):
    """The HTTP side: a thread per connection, keep-alive, bodies up to `max_body_bytes`, graceful stop."""

    daemon_threads = True
    block_on_close = False  # stop() waits for requests in flight itself

    def __init__(self, host, port, api, max_body_bytes):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.api, self.max_body_bytes = api, max_body_bytes
        self._cond = threading.Condition()
        self._busy = 0
        self._stopping = False
        self._connections = set()
        self._thread = None
        super().__init__((host, port), _Handler)
        self.port = self.server_address[1]

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)  # HTTPServer's would look the host name up in DNS
        self.server_name, self.server_port = self.server_address[:2]

    def start(self):
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="rest_api", daemon=True)
        self._thread.start()

    def refuse_new_requests(self):
        """Stop accepting connections; requests that arrive now on open ones answer 503."""
        with self._cond:
            self._stopping = True
        if self._thread is not None:
            self.shutdown()
            self._thread.join()

    def close(self, timeout):
        """Wait up to `timeout` seconds for the requests in flight, then close every connection."""
        self.refuse_new_requests()
        with self._cond:
            self._cond.wait_for(lambda: self._busy == 0, timeout)
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server_close()

    def handle_error(self, request, client_address):
        log.warning("REST connection from %s failed", client_address[0], exc_info=True)

    # bookkeeping used by _Handler
    def _opened(self, connection):
        with self._cond:
            self._connections.add(connection)

    def _closed(self, connection):
        with self._cond:
            self._connections.discard(connection)

    def _begin(self):
        with self._cond:
            if self._stopping:
                return False
            self._busy += 1
            return True

    def _end(self):
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "spade-tf-serving"
    timeout = IDLE_TIMEOUT_SECONDS

    def setup(self):
        super().setup()
        self.server._opened(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server._closed(self.connection)

    def _serve(self):
        server = self.server
        if not server._begin():
            self._reply(503, {"error": "The server is shutting down"}, close=True)
            return
        try:
            body = self._read_body()
            if body is not None:
                status, payload = server.api.handle(self.command, self.path, body)
                self._reply(status, payload)
        finally:
            server._end()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def handle_expect_100(self):
        """Refuse a body that cannot be read before the client sends it (curl asks first for large bodies)."""
        return self._body_length() is not None and super().handle_expect_100()

    def _read_body(self):
        """The request body, or None after answering why it cannot be read."""
        length = self._body_length()
        return None if length is None else self.rfile.read(length)

    def _body_length(self):
        """Content-Length if it is acceptable, else None after answering why it is not."""
        limit = self.server.max_body_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._reply(411, {"error": "Send the request body with a Content-Length header (chunked transfer "
                                       "encoding is not accepted)"}, close=True)
            return None
        try:
            length = int(self.headers.get("Content-Length", 0))
            if length < 0:
                raise ValueError
        except ValueError:
            self._reply(400, {"error": f"Bad Content-Length header: {self.headers['Content-Length']!r}"}, close=True)
            return None
        if length > limit:
            self._reply(413, {"error": f"Request body of {length} bytes is over this server's limit of {limit} "
                                       "bytes (--rest_api_max_body_bytes); send fewer or smaller images per "
                                       "request"}, close=True)
            return None
        return length

    def _reply(self, status, payload, close=False):
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format, *args):
        log.debug("REST %s: " + format, self.address_string(), *args)
