"""Tests for the torch-free `.pth` reader (spade_tf/io/torch_pth.py)."""

import collections
import itertools
import json
import os
import pickle
import shlex
import zipfile

import numpy as np
import pytest
from helpers.pth import STORAGE_TYPES, Parameter, Storage, Tensor, write_checkpoint  # torch.save's format

from spade_tf.io.torch_pth import CheckpointError, load_state_dict
from spade_tf.shared import shared_dir


def _fixture(name):
    path = shared_dir() / "fixtures" / "nvlabs_spade" / name
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared fixture missing in CI: {path}")
        pytest.skip(f"shared fixture missing: {path}")
    return path


def _expected_keys():
    """keys.txt -> {file name: [(key, shape, dtype), ...]}."""
    sections = {}
    for line in _fixture("keys.txt").read_text().splitlines():
        if line.startswith("#"):
            current = sections.setdefault(line.split()[1], [])
        elif line.strip():
            key, shape, dtype, _kind = line.split("\t")
            current.append((key, tuple(json.loads(shape)), np.dtype(dtype)))
    return sections


@pytest.mark.parametrize("net", ["G", "D", "E"])
def test_reference_checkpoints_match_keys_txt(net):
    state = load_state_dict(_fixture(f"latest_net_{net}.pth"))
    expected = _expected_keys()[f"latest_net_{net}.pth"]
    assert [(k, v.shape, v.dtype) for k, v in state.items()] == expected
    for key, value in state.items():
        assert value.flags.c_contiguous and value.flags.writeable, key
        assert np.all(np.isfinite(value)), key
        if key.endswith(("weight_u", "weight_v")):  # spectral norm keeps u, v normalised
            assert abs(np.linalg.norm(value.astype(np.float64)) - 1) < 1e-5, key
        if key.endswith("running_var"):
            assert np.all(value > 0), key
        if key.endswith("num_batches_tracked"):  # synchronized batch norm never counts (README)
            assert value == 0, key
    assert state._metadata[""] == {"version": 1}


def test_reference_spectral_norm_sigma_matches_torch():
    sigmas = np.load(_fixture("sn_sigma.npz"))
    nets = {n: load_state_dict(_fixture(f"latest_net_{n}.pth")) for n in "GDE"}
    for name in sigmas.files:
        net, module = name.split(":")
        state = nets[net]
        w = state[f"{module}.weight_orig"].astype(np.float64)
        sigma = state[f"{module}.weight_u"] @ (w.reshape(w.shape[0], -1) @ state[f"{module}.weight_v"])
        np.testing.assert_allclose(sigma, sigmas[name], rtol=1e-5, err_msg=name)
    assert len(sigmas.files) > 10


def _strided(flat, offset, size, stride):
    """What a torch view with this layout holds, element by element."""
    out = np.empty(size, flat.dtype)
    for index in itertools.product(*map(range, size)):
        out[index] = flat[offset + sum(i * s for i, s in zip(index, stride))]
    return out


def test_strided_offset_and_shared_storages(tmp_path):
    flat = np.arange(24, dtype=np.float32) * 1.5 - 7
    layouts = {
        "contiguous": (0, (2, 3, 4), (12, 4, 1)),
        "transposed": (0, (4, 3), (1, 4)),
        "offset": (5, (2, 3), (3, 1)),
        "offset_strided": (2, (3, 2), (8, 3)),
        "broadcast": (7, (3, 2), (0, 1)),
        "empty": (3, (0, 5), (5, 1)),
    }
    storage = Storage("FloatStorage", "0", flat)  # one storage shared by every view
    state = collections.OrderedDict((k, Tensor(storage, *v)) for k, v in layouts.items())
    state["scalar"] = Tensor(Storage("LongStorage", "1", np.array([42, 7])), 1, (), ())
    state["parameter"] = Parameter(Tensor(storage, 1, (2,), (10,)))
    state._metadata = collections.OrderedDict({"": {"version": 1}})

    loaded = load_state_dict(write_checkpoint(tmp_path / "strided.pth", state))
    expected = {k: _strided(flat, *v) for k, v in layouts.items()}
    np.testing.assert_array_equal(expected["transposed"], flat[:12].reshape(3, 4).T)
    assert list(loaded) == [*layouts, "scalar", "parameter"]
    for key, value in expected.items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)
        assert loaded[key].shape == value.shape and loaded[key].flags.c_contiguous, key
    assert loaded["scalar"].shape == () and loaded["scalar"].dtype == np.int64 and loaded["scalar"] == 7
    np.testing.assert_array_equal(loaded["parameter"], [flat[1], flat[11]])
    assert loaded._metadata == {"": {"version": 1}}


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_storage_types_and_byte_order(tmp_path, byteorder):
    values = {name: np.array([0, 1, -2.5, 3, 100]).astype(dtype) for name, dtype in STORAGE_TYPES.items()}
    state = {name: Tensor(Storage(name, str(i), v), 0, (5,), (1,)) for i, (name, v) in enumerate(values.items())}
    loaded = load_state_dict(write_checkpoint(tmp_path / "types.pth", state, byteorder))
    for name, value in values.items():
        assert loaded[name].dtype == np.dtype(STORAGE_TYPES[name]), name
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)


# ---- refusals ---------------------------------------------------------------------------------

class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("where", ["top", "value"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, protocol, where):
    marker = tmp_path / "pwned"
    evil = _Evil(marker)
    obj = evil if where == "top" else {"weight": evil}
    path = write_checkpoint(tmp_path / "evil.pth", obj, protocol=protocol)
    with pytest.raises(CheckpointError, match=r"refusing to load '(os|posix)\.system' from .*evil\.pth"):
        load_state_dict(path)
    assert not marker.exists()
    with zipfile.ZipFile(path) as archive:  # control: the payload is live under plain pickle
        pickle.loads(archive.read("archive/data.pkl"))
    assert marker.exists()


@pytest.mark.parametrize("module, name", [
    ("builtins", "eval"), ("__builtin__", "getattr"), ("torch.nn.modules.conv", "Conv2d"),
    ("torch", "load"), ("numpy", "frombuffer"), ("collections", "defaultdict"),
])
def test_forbidden_globals(tmp_path, module, name):
    # GLOBAL, EMPTY_TUPLE, REDUCE, STOP: would call module.name() if it were resolved.
    path = tmp_path / "global.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R.")
    with pytest.raises(CheckpointError, match=rf"refusing to load '{module}\.{name}' from .*global\.pth"):
        load_state_dict(path)


def test_not_a_state_dict(tmp_path):
    weight = Tensor(Storage("FloatStorage", "0", np.zeros(4, np.float32)), 0, (4,), (1,))
    path = write_checkpoint(tmp_path / "training.pth", {"epoch": 3, "state_dict": {"w": weight}})
    with pytest.raises(CheckpointError, match=r"training\.pth: expected a state dict .*'epoch' -> int"):
        load_state_dict(path)
    path = write_checkpoint(tmp_path / "list.pth", [weight])
    with pytest.raises(CheckpointError, match=r"list\.pth: expected a state dict .*found list"):
        load_state_dict(path)


def test_non_torch_and_damaged_files(tmp_path):
    flat = np.arange(6, dtype=np.float32)
    good = write_checkpoint(tmp_path / "good.pth", {"w": Tensor(Storage("FloatStorage", "0", flat), 0, (6,), (1,))})
    np.testing.assert_array_equal(load_state_dict(good)["w"], flat)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    no_pickle = tmp_path / "no_pickle.pth"
    with zipfile.ZipFile(no_pickle, "w") as archive:
        archive.writestr("archive/version", "3\n")
    legacy = tmp_path / "legacy.pth"  # torch's magic number, then the protocol version
    legacy.write_bytes(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe9\x03.")

    for path, message in [(png, "not a PyTorch checkpoint"), (text, "not a PyTorch checkpoint"),
                          (truncated, "not a PyTorch checkpoint"), (no_pickle, "expected one '<name>/data.pkl'"),
                          (legacy, "legacy .* re-save it")]:
        with pytest.raises(CheckpointError, match=f"{path.name}.*{message}"):
            load_state_dict(path)


def test_bad_storages(tmp_path):
    flat = np.arange(6, dtype=np.float32)

    def checkpoint(name, layout, records):
        state = {"w": Tensor(Storage("FloatStorage", "0", flat), *layout)}
        return write_checkpoint(tmp_path / name, state, records=records)

    with pytest.raises(CheckpointError, match=r"missing\.pth: missing storage record 'archive/data/0'"):
        load_state_dict(checkpoint("missing.pth", (0, (6,), (1,)), {}))
    with pytest.raises(CheckpointError, match=r"short\.pth: storage 'archive/data/0' holds 16 bytes"):
        load_state_dict(checkpoint("short.pth", (0, (6,), (1,)), {"0": flat[:4].tobytes()}))
    for layout in [(1, (6,), (1,)), (0, (2, 3), (3, 2)), (0, (2,), (-1,)), (0, (2,), (1, 1))]:
        path = checkpoint("layout.pth", layout, {"0": flat.tobytes()})
        with pytest.raises(CheckpointError, match=r"layout\.pth: tensor 'w' "):
            load_state_dict(path)
