"""Test set-up: quiet TensorFlow and the fixtures several test files share. The helpers behind them
are in tests/helpers/ (`import helpers`); test files import nothing from here."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import functools  # noqa: E402
import pathlib  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402

import helpers  # noqa: E402


@pytest.fixture(scope="session")
def nvlabs_fixture() -> pathlib.Path:
    return helpers.require_shared("fixtures/nvlabs_spade")


@pytest.fixture
def tiny_config(tmp_path):
    """The tests' tiny config as a factory: tiny_config(*overrides, preset="synthetic") -> Config
    (helpers.TINY, then the overrides), its runs in the test's tmp_path."""
    return functools.partial(helpers.tiny_config, checkpoints_dir=tmp_path)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> pathlib.Path:
    """A tiny SPADE trained once per session on the built-in data (helpers.train_tiny_model): its run folder."""
    return helpers.train_tiny_model(tmp_path_factory.mktemp("tiny-run"))


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory) -> pathlib.Path:
    """The tiny model exported once per session: a TF Serving model base path holding version 1."""
    from spade_tf.export import export_run

    base = tmp_path_factory.mktemp("tiny-export") / "spade"
    export_run(tiny_run, export_dir=base)
    return base


@pytest.fixture(scope="module")
def standin_export():
    """A stand-in export (helpers.studio) for the painting page's command-line and browser tests."""
    from helpers.studio import write_studio_standin

    folder = pathlib.Path(tempfile.mkdtemp(prefix="studio-standin-"))
    yield write_studio_standin(folder / "spade")
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def model_server(standin_export):
    """The embedded model server on `standin_export`: its gRPC address."""
    from serving.server import ModelServer

    server = ModelServer(model_base_path=str(standin_export), port=0, file_system_poll_wait_seconds=0)
    port = server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=1)


@pytest.fixture(autouse=True)
def no_leaked_cluster_config():
    """A test must not leave TF_CONFIG behind: later subprocesses would wait for other workers forever."""
    before = os.environ.get("TF_CONFIG")
    yield
    assert os.environ.get("TF_CONFIG") == before, "a test changed TF_CONFIG in os.environ"
