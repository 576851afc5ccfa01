"""Read a PyTorch `.pth` state dict into NumPy arrays, without PyTorch.

`torch.save(state_dict, path)` (torch >= 1.6) writes a zip archive:
`<prefix>/data.pkl` (the pickled dict, tensors as persistent ids),
`<prefix>/data/<key>` (one raw storage per key), `<prefix>/byteorder`,
`<prefix>/version`. The pickle is read by a restricted unpickler that
resolves only the handful of globals a state dict uses to local stand-ins,
so it imports nothing and never calls anything it was not built for; any
other global is refused before it is looked up.

bfloat16 tensors are returned as `ml_dtypes.bfloat16` arrays (the type
TensorFlow uses), not converted. Torch's `_metadata` (per-module versions)
is kept as the `_metadata` attribute of the returned OrderedDict.
"""

import collections
import pickle
import zipfile

import ml_dtypes
import numpy as np

# Legacy (pre-1.6) files start with a protocol-2 pickle of torch's magic number.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"

# torch.<storage class> and torch.<dtype> globals both resolve to the NumPy element type.
_DTYPES = {
    "FloatStorage": np.float32, "float32": np.float32,
    "DoubleStorage": np.float64, "float64": np.float64,
    "HalfStorage": np.float16, "float16": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "bfloat16": ml_dtypes.bfloat16,
    "LongStorage": np.int64, "int64": np.int64,
    "IntStorage": np.int32, "int32": np.int32,
    "ShortStorage": np.int16, "int16": np.int16,
    "CharStorage": np.int8, "int8": np.int8,
    "ByteStorage": np.uint8, "uint8": np.uint8, "UntypedStorage": np.uint8,
    "BoolStorage": np.bool_, "bool": np.bool_,
}


class CheckpointError(ValueError):
    """The file is not a PyTorch state dict this reader accepts."""


class _Tensor:
    """A tensor as the pickle describes it; becomes an array once the pickle is read."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _Storage:
    """One raw storage record of the archive, read when a tensor needs it."""

    __slots__ = ("dtype", "key", "numel")

    def __init__(self, dtype, key, numel):
        self.dtype, self.key, self.numel = dtype, key, numel


def _rebuild_tensor(storage, storage_offset, size, stride, *_requires_grad_hooks_metadata):
    """Stands in for torch._utils._rebuild_tensor and _rebuild_tensor_v2."""
    if not isinstance(storage, _Storage):
        raise TypeError(f"tensor storage is a {type(storage).__name__}, not a storage record")
    return _Tensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, *_requires_grad_hooks):
    return data


_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "UntypedStorage"): np.dtype(np.uint8),
}
_GLOBALS.update({("torch", name): np.dtype(dtype) for name, dtype in _DTYPES.items()})


class _Reader(pickle.Unpickler):
    def __init__(self, archive, prefix, path):
        self.archive, self.prefix, self.path = archive, prefix, path
        self.storages = {}
        super().__init__(archive.open(f"{prefix}/data.pkl"))

    def find_class(self, module, name):
        if (module, name) not in _GLOBALS:
            raise CheckpointError(
                f"refusing to load '{module}.{name}' from {self.path}: only PyTorch state dicts "
                "are supported (save `model.state_dict()`, not the model or other objects)")
        return _GLOBALS[module, name]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], np.dtype) and isinstance(pid[4], int) and pid[4] >= 0):
            raise CheckpointError(f"{self.path}: unsupported persistent id {pid!r}, "
                                  "expected ('storage', type, key, location, numel)")
        _, dtype, key, _location, numel = pid
        if key not in self.storages:
            self.storages[key] = _Storage(dtype, str(key), numel)
        return self.storages[key]

    def read_storage(self, storage):
        name = f"{self.prefix}/data/{storage.key}"
        try:
            raw = self.archive.read(name)
        except KeyError:
            raise CheckpointError(f"{self.path}: missing storage record '{name}'") from None
        if len(raw) < storage.numel * storage.dtype.itemsize:
            raise CheckpointError(f"{self.path}: storage '{name}' holds {len(raw)} bytes, "
                                  f"expected {storage.numel} x {storage.dtype}")
        return np.frombuffer(raw, storage.dtype, count=storage.numel)

    def to_array(self, tensor, key):
        """Copies the strided view `tensor` describes into a C-contiguous array."""
        shape, stride, offset = tensor.size, tensor.stride, tensor.offset
        ints = [offset, *shape, *stride]
        if len(shape) != len(stride) or not all(isinstance(v, int) and v >= 0 for v in ints):
            raise CheckpointError(f"{self.path}: tensor '{key}' has invalid layout "
                                  f"size={shape} stride={stride} offset={offset}")
        flat = self.read_storage(tensor.storage)
        if 0 in shape:
            return np.zeros(shape, flat.dtype)
        last = offset + sum((n - 1) * s for n, s in zip(shape, stride))
        if last >= flat.size:
            raise CheckpointError(f"{self.path}: tensor '{key}' (size={shape}, stride={stride}, "
                                  f"offset={offset}) reads past its storage of {flat.size}")
        itemsize = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape, [s * itemsize for s in stride], writeable=False)
        return np.array(view, order="C")


def load_state_dict(path) -> "collections.OrderedDict[str, np.ndarray]":
    """Reads a `torch.save(state_dict)` file into an OrderedDict of NumPy arrays.

    Raises CheckpointError (naming the file) for anything else: not a torch zip
    checkpoint, a truncated or corrupt archive, a pickle that refers to any
    global a state dict does not need, or a top object that is not str -> tensor.
    """
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            legacy = f.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC
        if legacy:
            raise CheckpointError(
                f"{path} is in the legacy (pre-1.6, non-zip) PyTorch format, which is not "
                "supported; re-save it with torch >= 1.6: "
                "torch.save(torch.load(path, map_location='cpu'), path)") from None
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (expected the zip archive "
                              "torch.save writes; the file is not a zip or is truncated)") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path} is not a PyTorch checkpoint: expected one "
                                  f"'<name>/data.pkl' in the zip, found {len(pickles)}")
        prefix = pickles[0].split("/")[0]
        try:
            big_endian = f"{prefix}/byteorder" in archive.namelist() and \
                archive.read(f"{prefix}/byteorder").strip() == b"big"
            reader = _Reader(archive, prefix, path)
            top = reader.load()
            if not isinstance(top, dict):
                raise CheckpointError(f"{path}: expected a state dict (mapping of str -> tensor), "
                                      f"found {type(top).__name__}")
            state = collections.OrderedDict()
            for key, value in top.items():
                if not (isinstance(key, str) and isinstance(value, _Tensor)):
                    raise CheckpointError(f"{path}: expected a state dict (mapping of str -> "
                                          f"tensor), found {key!r} -> {type(value).__name__}")
                state[key] = reader.to_array(value, key)
        except CheckpointError:
            raise
        except Exception as e:  # a malformed pickle or archive can fail in any way
            raise CheckpointError(f"{path}: corrupt PyTorch checkpoint "
                                  f"({type(e).__name__}: {e})") from e
    if big_endian:
        for array in state.values():
            array.byteswap(inplace=True)
    if hasattr(top, "_metadata"):
        state._metadata = top._metadata
    return state
