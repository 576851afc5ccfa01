"""JSON <-> tensors for TF Serving's REST API, with its rules and messages (`util/json_tensor.cc`).

A predict request's JSON (row format `{"instances": [...]}` or columnar `{"inputs": ...}`) becomes
arrays of the signature's input dtypes (`request_arrays`); the outputs of Predict become the answer's
JSON (`response_json`). Anything that does not fit raises ServingError with TF Serving's message.
"""

import base64
import binascii
import json
import math

import grpc
import numpy as np
import tensorflow as tf

from serving.errors import ServingError
from serving.predict import dtype_name

_INVALID = grpc.StatusCode.INVALID_ARGUMENT

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


def parse_json(body):
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
        raise ServingError(_INVALID, f"JSON Value: {json_text(doc)} Is not object")
    return doc


def request_arrays(doc, infos):
    """(arrays by input name, row format?) of a parsed predict request; `infos`: the signature's inputs."""
    if "instances" in doc and "inputs" in doc:
        raise ServingError(_INVALID, f"JSON Value: {json_text(doc)} Not formatted correctly expecting only one "
                                     "of 'inputs' or 'instances' keys to exist ")
    if "instances" in doc:
        return _from_instances(doc, infos), True
    if "inputs" in doc:
        return _from_inputs(doc["inputs"], infos), False
    raise ServingError(_INVALID, "Missing 'inputs' or 'instances' key")


def response_json(outputs, row_format):
    """The answer to a predict request: {"predictions": ...} (row format) or {"outputs": ...} (columnar)."""
    return _predictions(outputs) if row_format else _outputs(outputs)


def _from_instances(doc, infos):
    """Row format: one JSON value (one input) or object (named inputs) per batch item, stacked on dimension 0."""
    items = doc["instances"]
    if not isinstance(items, list):
        raise ServingError(_INVALID, f"JSON Value: {json_text(doc)} Excepting 'instances' to be an list/array")
    if not items:
        raise ServingError(_INVALID, f"JSON Value: {json_text(doc)} No values in 'instances' array")
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
                                             f"{json_text(item)} keys must be equal to: {','.join(names)}")
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
            raise ServingError(_INVALID, f"JSON Value: {json_text(value)} found at incorrect level: {level + 1} in "
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
        return ServingError(_INVALID, f"JSON Value: {json_text(value)} Type: {_json_type(value)} is not of "
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
        raise ServingError(_INVALID, f"Cannot convert JSON value: {json_text(value)} to "
                                     f"{dtype_name(self.dtype_enum)} without loss of precision.")

    def _string(self, value):
        if isinstance(value, str):
            return value.encode("utf-8")
        if not isinstance(value, dict):
            raise self._type_error(value)
        if list(value) != ["b64"] or not isinstance(value["b64"], str):
            raise ServingError(_INVALID, f"JSON Value: {json_text(value)} not formatted correctly for base64 data")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error:
            raise ServingError(_INVALID, "Unable to base64 decode") from None

    def _unimplemented(self, value):
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"Conversion of JSON Value: {json_text(value)} to type: "
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


def json_text(value, limit=200):
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
