"""Hand-built `.pth` files, pickled the way torch.save writes them, without torch (for the reader's tests)."""

import collections
import pickle
import sys
import types
import zipfile

import ml_dtypes
import numpy as np
import pytest

STORAGE_TYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class Storage:
    def __init__(self, type_name, key, values):
        self.type_name, self.key, self.values = type_name, key, values


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


class Parameter:
    def __init__(self, tensor):
        self.tensor = tensor

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_parameter, (self.tensor, True, collections.OrderedDict())


class _Pickler(pickle.Pickler):
    """Writes storages as torch does: persistent id ('storage', <torch.XStorage>, key, location, numel)."""

    def __init__(self, file, protocol):
        super().__init__(file, protocol=protocol)
        self.storages = {}

    def persistent_id(self, obj):
        if not isinstance(obj, Storage):
            return None
        self.storages[obj.key] = obj.values
        return ("storage", getattr(sys.modules["torch"], obj.type_name), obj.key, "cpu", obj.values.size)


def _fake_torch(monkeypatch):
    """Stand-ins registered as torch globals, so pickle writes the names torch writes."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    for name in STORAGE_TYPES:
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    for name in ["_rebuild_tensor_v2", "_rebuild_parameter"]:
        func = lambda *args: None  # noqa: E731 (never called: only its name is pickled)
        func.__module__, func.__qualname__ = "torch._utils", name
        setattr(utils, name, func)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)


def write_checkpoint(path, obj, byteorder="little", protocol=2, records=None):
    """A zip laid out like torch.save's; `records` (key -> bytes) replaces the pickled storages."""
    with pytest.MonkeyPatch.context() as monkeypatch, zipfile.ZipFile(path, "w") as archive:
        _fake_torch(monkeypatch)
        with archive.open("archive/data.pkl", "w") as f:
            pickler = _Pickler(f, protocol)
            pickler.dump(obj)
        archive.writestr("archive/byteorder", byteorder)
        archive.writestr("archive/version", "3\n")
        if records is None:
            swap = byteorder != sys.byteorder
            records = {k: (v.byteswap() if swap else v).tobytes() for k, v in pickler.storages.items()}
        for key, data in records.items():
            archive.writestr(f"archive/data/{key}", data)
    return path
