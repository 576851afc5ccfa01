"""NumPy arrays <-> TensorProto (TensorFlow's `make_tensor_proto` / `make_ndarray`, without TensorFlow).

Arrays go out as `tensor_content` (row-major, little-endian bytes), as TensorFlow writes them; both
`tensor_content` and the typed `*_val` fields (one value is broadcast, as in TensorFlow) are read.
"""

import numpy as np

from spade_tf_client.protos import tensor_pb2, types_pb2

DTYPES = {  # DataType -> NumPy dtype (little-endian), and TensorFlow's name of it
    types_pb2.DT_FLOAT: ("<f4", "float32"), types_pb2.DT_DOUBLE: ("<f8", "float64"),
    types_pb2.DT_HALF: ("<f2", "float16"), types_pb2.DT_INT8: ("i1", "int8"), types_pb2.DT_INT16: ("<i2", "int16"),
    types_pb2.DT_INT32: ("<i4", "int32"), types_pb2.DT_INT64: ("<i8", "int64"), types_pb2.DT_UINT8: ("u1", "uint8"),
    types_pb2.DT_UINT16: ("<u2", "uint16"), types_pb2.DT_UINT32: ("<u4", "uint32"),
    types_pb2.DT_UINT64: ("<u8", "uint64"), types_pb2.DT_BOOL: ("?", "bool"),
}
_ENUM = {np.dtype(code): enum for enum, (code, _) in DTYPES.items()}
_VALUES = {  # DataType -> the repeated field that holds its values
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val", types_pb2.DT_HALF: "half_val",
    types_pb2.DT_INT8: "int_val", types_pb2.DT_INT16: "int_val", types_pb2.DT_INT32: "int_val",
    types_pb2.DT_UINT8: "int_val", types_pb2.DT_UINT16: "int_val", types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val", types_pb2.DT_UINT64: "uint64_val", types_pb2.DT_BOOL: "bool_val",
}


def dtype_name(dtype_enum: int) -> str:
    """TensorFlow's name of a DataType ("uint8", "float32", ...)."""
    if dtype_enum in DTYPES:
        return DTYPES[dtype_enum][1]
    name = types_pb2.DataType.Name(dtype_enum) if dtype_enum in types_pb2.DataType.values() else str(dtype_enum)
    return name.removeprefix("DT_").lower()


def make_tensor_proto(array) -> tensor_pb2.TensorProto:
    """A NumPy array of a numeric or bool dtype -> TensorProto with `tensor_content`."""
    array = np.asarray(array)
    native = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if native not in _ENUM:
        raise TypeError(f"cannot send arrays of dtype {array.dtype}; expected one of "
                        f"{', '.join(sorted(name for _, name in DTYPES.values()))}")
    proto = tensor_pb2.TensorProto(dtype=_ENUM[native])
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    proto.tensor_content = np.ascontiguousarray(array, DTYPES[_ENUM[native]][0]).tobytes()
    return proto


def make_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """A TensorProto -> NumPy array; ValueError for dtypes this client does not read or a bad size."""
    if proto.dtype not in DTYPES:
        raise ValueError(f"cannot read a tensor of dtype {dtype_name(proto.dtype)}")
    dtype = np.dtype(DTYPES[proto.dtype][0])
    shape = [d.size for d in proto.tensor_shape.dim]
    count = int(np.prod(shape, dtype=np.int64))
    if proto.tensor_content:
        array = np.frombuffer(proto.tensor_content, dtype)
    else:
        values = getattr(proto, _VALUES[proto.dtype])
        if proto.dtype == types_pb2.DT_HALF:
            array = np.asarray(values, np.uint16).view(np.float16)
        else:
            array = np.asarray(values, dtype)
        if 0 < array.size < count:  # TensorFlow repeats the last value
            array = np.concatenate([array, np.repeat(array[-1:], count - array.size)])
    if array.size != count:
        raise ValueError(f"tensor of shape {shape} holds {array.size} values")
    return array.astype(dtype.newbyteorder("="), copy=False).reshape(shape)
