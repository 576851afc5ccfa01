"""An embedded model server that speaks TF Serving's gRPC API (PredictionService and ModelService) and REST API.

    python -m serving.server --model_name spade --model_base_path exports/spade --port 8500 --rest_api_port 8501
    python -m serving.server --model_config_file models.config --model_config_file_poll_wait_seconds 60
    python -m serving.server --config my_serving.yaml serve.max_batch_size=16

It serves any SavedModel laid out as TF Serving expects (`<base_path>/<version>/`), answers with TF
Serving's status codes and messages, checks requests against `assets.extra/labels.json` when a
model has one, batches concurrent requests, and stops on SIGTERM/SIGINT within its grace period.
Flags and their defaults are the fields of `spade_tf.config.ServeConfig`.
"""

import argparse
import concurrent.futures
import dataclasses
import json
import logging
import os
import pathlib
import signal
import sys
import threading
import time
import typing

import grpc
from google.protobuf import text_format
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from serving import batching, rest
from serving.errors import ServingError
from serving.inflight import InFlight, deadline_left
from serving.servables import ModelManager, config_for_model
from serving.services import ModelServicer, PredictionServicer
from spade_tf.config import Config, ConfigError, ServeConfig, load_config, parse_override

log = logging.getLogger(__name__)

ANSWER_SECONDS = 0.5  # after the grace period: time for the cancelled requests' answers to go out


def max_message_bytes(max_pixels):
    """gRPC message limit: room for int32 instance + uint8 label maps (or RGB images) of max_pixels."""
    return min(2**31 - 1, 8 * max_pixels + 2**20)


def serve_config(preset=None, overrides=(), base: ServeConfig | None = None, **flags) -> ServeConfig:
    """The ServeConfig of: defaults (or `base`) < a preset or YAML file's serve section < `serve.field=value`
    overrides < flags (ServeConfig fields), built once through the config's parser and checks."""
    for text in overrides:
        [section] = parse_override(Config(), text)
        if section != "serve":
            raise ConfigError(f"override '{text}' is not a serve.* field: the server reads only the serve section")
    names = {f.name for f in dataclasses.fields(ServeConfig)}
    unknown = sorted(set(flags) - names)
    if unknown:
        raise TypeError(f"unknown server option(s) {', '.join(unknown)}; the options are ServeConfig's fields: "
                        f"{', '.join(sorted(names))}")
    values = {**(dataclasses.asdict(base) if base is not None else {}), **flags}
    given = [f"serve.{name}={json.dumps(os.fspath(v) if isinstance(v, os.PathLike) else v)}"
             for name, v in values.items()]
    return load_config(preset, [*overrides, *given]).serve


def _check_options(c: ServeConfig):
    """What the config's per-field checks cannot see: ports' upper bound, options that go together."""
    if not 0 <= c.rest_api_port <= 65535 or not 0 <= c.port <= 65535:
        raise ValueError(f"ports go from 0 to 65535, got --port {c.port} and --rest_api_port {c.rest_api_port}")
    if c.rest_api_port and c.rest_api_port == c.port:
        raise ValueError(f"--port and --rest_api_port are both {c.port}: give them different ports")
    if bool(c.ssl_cert) != bool(c.ssl_key):
        raise ValueError("--ssl_cert and --ssl_key go together")


def parse_model_config(text, path):
    """The ModelConfigList of a `--model_config_file` (text ModelServerConfig) read from `path`."""
    try:
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as e:
        raise ValueError(f"cannot read model config file {path}: {e}") from None
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError(f"model config file {path} has no model_config_list (the only kind served)")
    return config.model_config_list


class ModelServer:
    """The server: `ModelServer(config=None, **flags)`, flags being ServeConfig fields (the command-line flags).

    `start()` loads the models, starts the gRPC API (port 0 picks a free port) and, when `rest_api_port`
    is set, the REST API, and returns the gRPC port; `stop(grace)` refuses new requests, lets those in
    flight finish for up to `grace` seconds (default: `grace_seconds`), answers the rest UNAVAILABLE,
    and unloads.
    """

    def __init__(self, config: ServeConfig | None = None, **flags):
        self.config = c = config if config is not None and not flags else serve_config(base=config, **flags)
        _check_options(c)
        self._config_text = None  # what --model_config_file held when last read
        if c.model_config_file:
            try:
                self._config_text = pathlib.Path(c.model_config_file).read_text()
            except OSError as e:
                raise ValueError(f"cannot read model config file {c.model_config_file}: {e}") from None
            self._config = parse_model_config(self._config_text, c.model_config_file)
        elif c.model_base_path:
            self._config = config_for_model(c.model_name, str(c.model_base_path))
        else:
            raise ValueError("give --model_base_path (with --model_name) or --model_config_file")
        self._credentials = None
        if c.ssl_cert:
            try:
                with open(c.ssl_key, "rb") as key, open(c.ssl_cert, "rb") as cert:
                    self._credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
            except OSError as e:
                raise ValueError(f"cannot read the TLS key or certificate: {e}") from None
        self._batching = None
        if c.enable_batching:
            self._batching = (batching.read_batching_parameters(c.batching_parameters_file)
                              if c.batching_parameters_file else batching.batching_parameters_class()())
            for name in ("max_batch_size", "batch_timeout_micros"):  # the flags fill what the file leaves out
                if not self._batching.HasField(name):
                    getattr(self._batching, name).value = getattr(c, name)
        self.port, self.rest_api_port, self.host, self.max_pixels = c.port, c.rest_api_port, c.host, c.max_pixels
        self._manager = ModelManager(c.file_system_poll_wait_seconds)
        self._in_flight = InFlight()
        self._scheduler = None
        self._server = None
        self._rest = None
        self._stop = threading.Event()
        self._config_watcher = None

    def start(self):
        """Load the configured models, then serve; returns the bound gRPC port."""
        if self._batching is not None:
            self._scheduler = batching.BatchScheduler(self._batching)  # checks the parameters before loading
        try:
            self._manager.set_config(self._config)
        except ServingError:
            self._release()
            raise
        prediction = PredictionServicer(self._manager, self._scheduler, self.max_pixels, self._in_flight)
        models = ModelServicer(self._manager)
        self._start_grpc(prediction, models)
        if self.rest_api_port:
            try:
                self._rest = rest.RestApiServer(self.host, self.rest_api_port, rest.RestApi(prediction, models),
                                                self.config.rest_api_max_body_bytes)
            except OSError as e:
                self._release()
                raise OSError(f"cannot listen on {self.host}:{self.rest_api_port} (--rest_api_port): {e}") from None
        self._server.start()
        self._manager.start_polling()
        log.info("Running gRPC ModelServer at %s:%d%s ...", self.host, self.port,
                 " (TLS)" if self._credentials is not None else "")
        if self._rest is not None:
            self._rest.start()
            log.info("Exporting HTTP/REST API at:%s:%d ...", self.host, self.rest_api_port)
        wait = self.config.model_config_file_poll_wait_seconds
        if self.config.model_config_file and wait > 0:
            self._config_watcher = threading.Thread(target=self._watch_config_file, args=(wait,),
                                                    name="model_config_poller", daemon=True)
            self._config_watcher.start()
        return self.port

    def _start_grpc(self, prediction, models):
        """Create the gRPC server with both services and bind its port (it starts serving in `start`)."""
        workers = 16 if self._scheduler is None else max(16, 4 * self._scheduler.max_batch_size)
        limit = max_message_bytes(self.max_pixels)
        self._server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                     ("grpc.so_reuseport", 0)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(prediction, self._server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(models, self._server)
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        try:
            if self._credentials is None:
                self.port = self._server.add_insecure_port(address)
            else:
                self.port = self._server.add_secure_port(address, self._credentials)
        except RuntimeError:
            self._release()
            raise OSError(f"cannot listen on {address}: in use or not a local address") from None

    def stop(self, grace=None):
        """Refuse new requests, let those in flight finish for up to `grace` seconds, answer the ones left
        UNAVAILABLE, unload the models. Returns within about `grace` + 1 s: a computation still running
        is not waited for (its thread ends with it, or with the process)."""
        grace = self.config.grace_seconds if grace is None else grace
        deadline = time.monotonic() + grace
        if self._rest is not None:
            self._rest.refuse_new_requests()
        stopped = None
        if self._server is not None:
            stopped = self._server.stop(grace + ANSWER_SECONDS)  # gRPC cancels what is left after that
        if self._scheduler is not None:
            self._scheduler.drain()  # queued batches run now instead of waiting for their timeout
        if not self._in_flight.wait(deadline_left(deadline)):
            error = ServingError(grpc.StatusCode.UNAVAILABLE,
                                 f"The server stopped before this request finished (grace period of {grace:g} s "
                                 "over); send it again")
            cancelled = self._in_flight.cancel(error, ANSWER_SECONDS)
            log.warning("Grace period of %g s over: %d request(s) still computing answered UNAVAILABLE", grace,
                        cancelled)
        if stopped is not None:
            stopped.wait(deadline_left(deadline + ANSWER_SECONDS))
        if self._rest is not None:
            self._rest.close(deadline_left(deadline + ANSWER_SECONDS))
            self._rest = None
        self._release(deadline_left(deadline))
        log.info("Stopped; executed batch sizes: %s", self.batch_sizes())

    def batch_sizes(self):
        """{batch size: number of batches} executed so far; {} without batching."""
        return {} if self._scheduler is None else self._scheduler.batch_sizes()

    def _watch_config_file(self, wait):
        """Every `wait` seconds, serve what --model_config_file says if it changed; keep the old config if it is bad."""
        path = self.config.model_config_file
        seen = self._config_text  # the text last acted on, or the last read error: each is logged once
        while not self._stop.wait(wait):
            try:
                text = pathlib.Path(path).read_text()
            except OSError as e:
                text = f"cannot read model config file {path}: {e}"
                if text != seen:
                    log.error("%s; the models served so far keep serving", text)
                seen = text
                continue
            if text == seen:
                continue
            seen = text
            try:
                config = parse_model_config(text, path)
                log.info("Model config file %s changed: serving its models", path)
                self._manager.set_config(config)
            except ValueError as e:
                log.error("%s; the models served so far keep serving", e)
            except ServingError as e:
                log.error("Reloading model config file %s: %s", path, e.message)
            except Exception:  # noqa: BLE001 - keep polling; the traceback is for the log
                log.exception("Reloading model config file %s failed", path)


    def _release(self, timeout=None):
        """Stop the threads and unload; batches still queued get `timeout` seconds to run (None: all run)."""
        self._stop.set()
        if self._config_watcher is not None:
            self._config_watcher.join(timeout)  # it may be loading a new config's models
        if self._rest is not None:
            self._rest.close(0)
            self._rest = None
        self._manager.stop(timeout)
        if self._scheduler is not None:
            self._scheduler.close(timeout)


def _flag_bool(text):
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


_HELP = {  # one line per ServeConfig field; the defaults come from ServeConfig
    "port": "gRPC port (0: a free port, logged at start)",
    "rest_api_port": "REST API port (0: no REST API; TF Serving's Docker image uses 8501)",
    "host": "address both ports listen on (0.0.0.0: all interfaces)",
    "model_name": "name of the model served from --model_base_path",
    "model_base_path": "folder of numbered SavedModel version folders",
    "model_config_file": "text ModelServerConfig; overrides --model_name/--model_base_path",
    "model_config_file_poll_wait_seconds": "seconds between reads of --model_config_file (0: read once at start)",
    "file_system_poll_wait_seconds": "seconds between polls for new versions (<= 0: look once at start)",
    "enable_batching": "batch concurrent requests (--enable_batching=false to turn off)",
    "batching_parameters_file": f"text BatchingParameters; fields it leaves out: --max_batch_size, "
                                f"--batch_timeout_micros, else {batching.DEFAULTS}",
    "max_batch_size": "largest batch, when the batching parameters file does not set it",
    "batch_timeout_micros": "longest wait for a batch to fill, when the batching parameters file does not set it",
    "max_pixels": "largest batch x height x width per request input",
    "rest_api_max_body_bytes": "largest REST request body (larger: HTTP 413)",
    "ssl_cert": "PEM certificate (chain) for gRPC over TLS; with --ssl_key",
    "ssl_key": "PEM private key for TLS",
    "grace_seconds": "on SIGTERM/SIGINT, how long requests in flight may take to finish",
}


def parser():
    """The command line: one flag per ServeConfig field, then --config and serve.* overrides.

    A flag not given is absent from the parsed arguments, so that the config file and the overrides
    below it can set it (its default, in the help, is ServeConfig's)."""
    p = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__.split("\n")[0],
                                argument_default=argparse.SUPPRESS)
    defaults = ServeConfig()
    types = typing.get_type_hints(ServeConfig)
    for field in dataclasses.fields(ServeConfig):
        default = getattr(defaults, field.name)
        help_text = _HELP[field.name] + (f" (default: {default})" if default != "" else "")
        if types[field.name] is bool:
            p.add_argument(f"--{field.name}", type=_flag_bool, nargs="?", const=True, help=help_text)
        else:
            p.add_argument(f"--{field.name}", type=types[field.name], help=help_text)
    p.add_argument("--config", default=None,
                   help="preset name (configs/<name>.yaml) or YAML file whose serve section gives the defaults; "
                        "flags given here win")
    p.add_argument("overrides", nargs="*", default=[], metavar="serve.field=value",
                   help="overrides of the serve section")
    return p


def parse_args(argv=None):
    """The ServeConfig a command line asks for: defaults < --config file < serve.* overrides < flags."""
    p = parser()
    flags = vars(p.parse_args(argv))
    preset, overrides = flags.pop("config"), flags.pop("overrides")
    try:
        return serve_config(preset, overrides, **flags)
    except ConfigError as e:
        p.error(str(e))


def main(argv=None):
    """Console entry point: serve until SIGTERM or SIGINT, then stop within the grace period; returns the exit code."""
    config = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server = ModelServer(config)
        server.start()
    except (ValueError, OSError, ServingError) as e:
        log.error("%s", e.message if isinstance(e, ServingError) else e)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: stop.set())
    while not stop.wait(1.0):
        pass
    log.info("Stopping: finishing requests in flight (up to %g s)", config.grace_seconds)
    server.stop()
    return 0


def exit_now(code):
    """Exit without the interpreter's teardown: with TensorFlow loaded it takes seconds (5 to 9 s measured on
    a busy 2-core machine), and a computation cancelled by `stop` may still hold a thread."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
