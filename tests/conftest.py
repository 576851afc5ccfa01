"""Shared test set-up: quiet TensorFlow, shared material, tiny configs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib  # noqa: E402

import pytest  # noqa: E402

from spade_tf.shared import shared_dir  # noqa: E402


def require_shared(relative: str) -> pathlib.Path:
    """A path inside the shared material; skips with the reason when absent (fails under CI=true)."""
    path = shared_dir() / relative
    if not path.exists():
        message = f"shared material {path} not found (set SPADE_SHARED to the shared folder)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def nvlabs_fixture() -> pathlib.Path:
    return require_shared("fixtures/nvlabs_spade")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> pathlib.Path:
    """A tiny SPADE trained once per session on the built-in data (tests/tiny_model.py): its run folder."""
    from tiny_model import train_tiny_model

    return train_tiny_model(tmp_path_factory.mktemp("tiny-run"))


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory) -> pathlib.Path:
    """The tiny model exported once per session: a TF Serving model base path holding version 1."""
    from spade_tf.export import export_run

    base = tmp_path_factory.mktemp("tiny-export") / "spade"
    export_run(tiny_run, export_dir=base)
    return base


@pytest.fixture(autouse=True)
def no_leaked_cluster_config():
    """A test must not leave TF_CONFIG behind: later subprocesses would wait for other workers forever."""
    before = os.environ.get("TF_CONFIG")
    yield
    assert os.environ.get("TF_CONFIG") == before, "a test changed TF_CONFIG in os.environ"
