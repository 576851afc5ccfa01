"""An embedded model server that speaks TF Serving's gRPC API (PredictionService and ModelService) and REST API.

    python -m serving.server --model_name spade --model_base_path exports/spade --port 8500 --rest_api_port 8501
    python -m serving.server --model_config_file models.config --model_config_file_poll_wait_seconds 60
    python -m serving.server --config my_serving.yaml serve.max_batch_size=16

It serves any SavedModel laid out as TF Serving expects (`<base_path>/<version>/`), answers with TF
Serving's status codes and messages, checks requests against `assets.extra/labels.json` when a
model has one, batches concurrent requests, and stops gracefully on SIGTERM/SIGINT. Flags and
their defaults are the fields of `spade_tf.config.ServeConfig`.
"""

import argparse
import concurrent.futures
import dataclasses
import functools
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
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_management_pb2,
                                     model_service_pb2_grpc, prediction_service_pb2_grpc, status_pb2)
from tensorflow_serving.config import model_server_config_pb2

from serving import batching, predict, rest
from serving.errors import ServingError, internal_error, truncated
from serving.servables import ModelManager, config_for_model
from spade_tf.config import Config, ConfigError, ServeConfig, apply, load_config, parse_override

log = logging.getLogger(__name__)


def max_message_bytes(max_pixels):
    """gRPC message limit: room for int32 instance + uint8 label maps (or RGB images) of max_pixels."""
    return min(2**31 - 1, 8 * max_pixels + 2**20)


def _grpc_method(method):
    """A gRPC handler from `method(self, request)`: ServingError -> its status, any other exception -> INTERNAL."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request)
        except ServingError as e:
            error = e
            log.info("%s -> %s: %s", method.__name__, e.code.name, e.message)
        except Exception as e:  # noqa: BLE001 - never send a traceback to the client
            log.exception("%s failed", method.__name__)
            error = internal_error(method.__name__, e)
        context.abort(error.code, truncated(error.message))

    return wrapper


def _require_model_spec(request):
    if not request.HasField("model_spec"):
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress and MultiInference are UNIMPLEMENTED.

    The lower-case methods take a request and return the response or raise ServingError; the gRPC
    methods wrap them, and the REST API calls them too.
    """

    def __init__(self, manager, scheduler, max_pixels):
        self.manager, self._scheduler, self._max_pixels = manager, scheduler, max_pixels

    def predict(self, request):
        _require_model_spec(request)
        servable = self.manager.resolve(request.model_spec)
        return predict.predict(servable, request, max_pixels=self._max_pixels, scheduler=self._scheduler)

    def get_model_metadata(self, request):
        _require_model_spec(request)
        if not request.metadata_field:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               "GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {field} is not supported")
        servable = self.manager.resolve(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in servable.signature_defs.items():
            signature_defs.signature_def[name].CopyFrom(signature)
        response.metadata["signature_def"].Pack(signature_defs)
        return response

    def classify(self, request):
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, "Classify is not served here: use Predict")

    def regress(self, request):
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, "Regress is not served here: use Predict")

    def multi_inference(self, request):
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not served here: use Predict")

    Predict = _grpc_method(predict)
    GetModelMetadata = _grpc_method(get_model_metadata)
    Classify = _grpc_method(classify)
    Regress = _grpc_method(regress)
    MultiInference = _grpc_method(multi_inference)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest (model_config_list configs only)."""

    def __init__(self, manager):
        self._manager = manager

    def get_model_status(self, request):
        _require_model_spec(request)
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, status in self._manager.status(request.model_spec):
            entry = response.model_version_status.add(version=version, state=status.state)
            entry.status.SetInParent()  # TF Serving always sends a status (OK: error_code 0)
            if status.error is not None:
                entry.status.error_code = status.error.code.value[0]
                entry.status.error_message = status.error.message
        return response

    def handle_reload_config_request(self, request):
        if request.config.WhichOneof("config") != "model_config_list":
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                               "ModelConfigList is currently supported")
        self._manager.set_config(request.config.model_config_list)
        return model_management_pb2.ReloadConfigResponse(status=status_pb2.StatusProto(error_code=0))

    GetModelStatus = _grpc_method(get_model_status)
    HandleReloadConfigRequest = _grpc_method(handle_reload_config_request)


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
    flight finish for up to `grace` seconds (default: `grace_seconds`), and unloads.
    """

    def __init__(self, config: ServeConfig | None = None, **flags):
        self.config = c = dataclasses.replace(config or ServeConfig(), **flags)
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
        values = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in dataclasses.asdict(c).items()}
        apply(Config(), {"serve": values}, "ModelServer")  # the config's type and range checks (paths as str)
        if not 0 <= c.rest_api_port <= 65535 or not 0 <= c.port <= 65535:
            raise ValueError(f"ports go from 0 to 65535, got --port {c.port} and --rest_api_port {c.rest_api_port}")
        if c.rest_api_port and c.rest_api_port == c.port:
            raise ValueError(f"--port and --rest_api_port are both {c.port}: give them different ports")
        if bool(c.ssl_cert) != bool(c.ssl_key):
            raise ValueError("--ssl_cert and --ssl_key go together")
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
        workers = 16 if self._scheduler is None else max(16, 4 * self._scheduler.max_batch_size)
        limit = max_message_bytes(self.max_pixels)
        self._server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit),
                     ("grpc.so_reuseport", 0)])
        prediction = PredictionServicer(self._manager, self._scheduler, self.max_pixels)
        models = ModelServicer(self._manager)
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

    def stop(self, grace=None):
        """Refuse new requests, finish those in flight (up to `grace` seconds), unload the models."""
        grace = self.config.grace_seconds if grace is None else grace
        end = time.monotonic() + grace
        if self._rest is not None:
            self._rest.refuse_new_requests()
        if self._server is not None:
            stopped = self._server.stop(grace)
            if self._scheduler is not None:
                self._scheduler.drain()
            stopped.wait()
        if self._rest is not None:
            self._rest.close(max(0.0, end - time.monotonic()))
            self._rest = None
        self._release()
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

    def _release(self):
        self._stop.set()
        if self._config_watcher is not None:
            self._config_watcher.join()
        if self._rest is not None:
            self._rest.close(0)
            self._rest = None
        self._manager.stop()
        if self._scheduler is not None:
            self._scheduler.close()


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
    """The command line: one flag per ServeConfig field (its default), then --config and serve.* overrides."""
    p = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__.split("\n")[0])
    defaults = ServeConfig()
    types = typing.get_type_hints(ServeConfig)
    for field in dataclasses.fields(ServeConfig):
        default = getattr(defaults, field.name)
        help_text = _HELP[field.name] + (f" (default: {default})" if default != "" else "")
        if types[field.name] is bool:
            p.add_argument(f"--{field.name}", type=_flag_bool, nargs="?", const=True, default=default, help=help_text)
        else:
            p.add_argument(f"--{field.name}", type=types[field.name], default=default, help=help_text)
    p.add_argument("--config", help="preset name (configs/<name>.yaml) or YAML file whose serve section gives the "
                                    "defaults; flags given here win")
    p.add_argument("overrides", nargs="*", metavar="serve.field=value", help="overrides of the serve section")
    return p


def serve_config(preset=None, overrides=()):
    """The serve section of a preset or YAML file with `serve.field=value` overrides (spade_tf.config)."""
    for text in overrides:
        [section] = parse_override(Config(), text)
        if section != "serve":
            raise ConfigError(f"override '{text}' is not a serve.* field: the server reads only the serve section")
    return load_config(preset, overrides).serve


def parse_args(argv=None):
    """The ServeConfig a command line asks for: defaults < --config file < serve.* overrides < flags."""
    p = parser()
    args = p.parse_args(argv)
    if args.config or args.overrides:
        try:
            p.set_defaults(**dataclasses.asdict(serve_config(args.config, args.overrides)))
        except ConfigError as e:
            p.error(str(e))
        args = p.parse_args(argv)
    options = vars(args)
    del options["config"], options["overrides"]
    cfg = Config()
    try:
        apply(cfg, {"serve": options}, "command line")  # the config's type and range checks
    except ConfigError as e:
        p.error(str(e))
    return cfg.serve


def main(argv=None):
    """Console entry point: serve until SIGTERM or SIGINT, then stop gracefully; returns the exit code."""
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


if __name__ == "__main__":
    sys.exit(main())
