"""An embedded model server that speaks TF Serving's gRPC API (PredictionService and ModelService).

    python -m serving.server --model_name spade --model_base_path exports/spade --port 8500
    python -m serving.server --model_config_file models.config --port 8500

It serves any SavedModel laid out as TF Serving expects (`<base_path>/<version>/`), answers with TF
Serving's status codes and messages, checks requests against `assets.extra/labels.json` when a
model has one, batches concurrent requests, and stops gracefully on SIGTERM/SIGINT.
"""

import argparse
import concurrent.futures
import functools
import logging
import signal
import sys
import threading

import grpc
from google.protobuf import text_format
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_management_pb2,
                                     model_service_pb2_grpc, prediction_service_pb2_grpc, status_pb2)
from tensorflow_serving.config import model_server_config_pb2

from serving import batching, predict
from serving.errors import ServingError, internal_error, truncated
from serving.servables import ModelManager, config_for_model

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 4096 * 4096


def max_message_bytes(max_pixels):
    """gRPC message limit: room for int32 instance + uint8 label maps (or RGB images) of max_pixels."""
    return min(2**31 - 1, 8 * max_pixels + 2**20)


def _grpc_method(method):
    """Turn ServingError into its status and any other exception into INTERNAL, logged here."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
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
    """Predict and GetModelMetadata; Classify, Regress and MultiInference are UNIMPLEMENTED."""

    def __init__(self, manager, scheduler, max_pixels):
        self._manager, self._scheduler, self._max_pixels = manager, scheduler, max_pixels

    @_grpc_method
    def Predict(self, request, context):
        _require_model_spec(request)
        servable = self._manager.resolve(request.model_spec)
        return predict.predict(servable, request, max_pixels=self._max_pixels, scheduler=self._scheduler)

    @_grpc_method
    def GetModelMetadata(self, request, context):
        _require_model_spec(request)
        if not request.metadata_field:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               "GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {field} is not supported")
        servable = self._manager.resolve(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        for name, signature in servable.signature_defs.items():
            signature_defs.signature_def[name].CopyFrom(signature)
        response.metadata["signature_def"].Pack(signature_defs)
        return response

    @_grpc_method
    def Classify(self, request, context):
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, "Classify is not served here: use Predict")

    @_grpc_method
    def Regress(self, request, context):
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, "Regress is not served here: use Predict")

    @_grpc_method
    def MultiInference(self, request, context):
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not served here: use Predict")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest (model_config_list configs only)."""

    def __init__(self, manager):
        self._manager = manager

    @_grpc_method
    def GetModelStatus(self, request, context):
        _require_model_spec(request)
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, status in self._manager.status(request.model_spec):
            entry = response.model_version_status.add(version=version, state=status.state)
            entry.status.SetInParent()  # TF Serving always sends a status (OK: error_code 0)
            if status.error is not None:
                entry.status.error_code = status.error.code.value[0]
                entry.status.error_message = status.error.message
        return response

    @_grpc_method
    def HandleReloadConfigRequest(self, request, context):
        if request.config.WhichOneof("config") != "model_config_list":
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                               "ModelConfigList is currently supported")
        self._manager.set_config(request.config.model_config_list)
        return model_management_pb2.ReloadConfigResponse(status=status_pb2.StatusProto(error_code=0))


def read_model_config_file(path):
    """Parse a `--model_config_file` (text ModelServerConfig) into its ModelConfigList."""
    try:
        with open(path) as f:
            config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    except (OSError, text_format.ParseError) as e:
        raise ValueError(f"cannot read model config file {path}: {e}") from None
    if config.WhichOneof("config") != "model_config_list":
        raise ValueError(f"model config file {path} has no model_config_list (the only kind served)")
    return config.model_config_list


class ModelServer:
    """The server; keyword arguments are the command-line flags.

    `start()` loads the models and returns the bound port (port 0 picks a free one); `stop(grace)`
    refuses new requests, lets those in flight finish for up to `grace` seconds, and unloads.
    """

    def __init__(self, *, port=8500, host="127.0.0.1", model_name="spade", model_base_path=None,
                 model_config_file=None, file_system_poll_wait_seconds=1.0, enable_batching=True,
                 batching_parameters_file=None, max_pixels=DEFAULT_MAX_PIXELS, ssl_cert=None, ssl_key=None):
        if model_config_file:
            self._config = read_model_config_file(model_config_file)
        elif model_base_path:
            self._config = config_for_model(model_name, model_base_path)
        else:
            raise ValueError("give --model_base_path (with --model_name) or --model_config_file")
        if max_pixels < 1:
            raise ValueError(f"--max_pixels must be >= 1, got {max_pixels}")
        if bool(ssl_cert) != bool(ssl_key):
            raise ValueError("--ssl_cert and --ssl_key go together")
        self._credentials = None
        if ssl_cert:
            try:
                with open(ssl_key, "rb") as key, open(ssl_cert, "rb") as cert:
                    self._credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
            except OSError as e:
                raise ValueError(f"cannot read the TLS key or certificate: {e}") from None
        self._batching = None
        if enable_batching:
            self._batching = (batching.read_batching_parameters(batching_parameters_file)
                              if batching_parameters_file else batching.batching_parameters_class()())
        self.port, self.host, self.max_pixels = port, host, max_pixels
        self._manager = ModelManager(file_system_poll_wait_seconds)
        self._scheduler = None
        self._server = None

    def start(self):
        """Load the configured models, then serve; returns the bound port."""
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
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(self._manager, self._scheduler, self.max_pixels), self._server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(self._manager), self._server)
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        try:
            if self._credentials is None:
                self.port = self._server.add_insecure_port(address)
            else:
                self.port = self._server.add_secure_port(address, self._credentials)
        except RuntimeError:
            self._release()
            raise OSError(f"cannot listen on {address}: in use or not a local address") from None
        self._server.start()
        self._manager.start_polling()
        log.info("Running gRPC ModelServer at %s:%d%s ...", self.host, self.port,
                 " (TLS)" if self._credentials is not None else "")
        return self.port

    def stop(self, grace=None):
        """Refuse new requests, finish those in flight (up to `grace` seconds), unload the models."""
        if self._server is not None:
            stopped = self._server.stop(grace)
            if self._scheduler is not None:
                self._scheduler.drain()
            stopped.wait()
        self._release()
        log.info("Stopped; executed batch sizes: %s", self.batch_sizes())

    def batch_sizes(self):
        """{batch size: number of batches} executed so far; {} without batching."""
        return {} if self._scheduler is None else self._scheduler.batch_sizes()

    def _release(self):
        self._manager.stop()
        if self._scheduler is not None:
            self._scheduler.close()


def _flag_bool(text):
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parser():
    p = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0: a free port, logged at start)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all interfaces)")
    p.add_argument("--model_name", default="spade", help="name of the model served from --model_base_path")
    p.add_argument("--model_base_path", help="folder of numbered SavedModel version folders")
    p.add_argument("--model_config_file", help="text ModelServerConfig; overrides --model_name/--model_base_path")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                   help="seconds between polls for new versions (<= 0: load once at start)")
    p.add_argument("--enable_batching", type=_flag_bool, nargs="?", const=True, default=True,
                   help="batch concurrent requests (default true; --enable_batching=false to turn off)")
    p.add_argument("--batching_parameters_file",
                   help=f"text BatchingParameters; fields left out default to {batching.DEFAULTS}")
    p.add_argument("--max_pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="largest batch x height x width per request input")
    p.add_argument("--ssl_cert", help="PEM certificate (chain) for TLS; with --ssl_key")
    p.add_argument("--ssl_key", help="PEM private key for TLS")
    p.add_argument("--grace_seconds", type=float, default=10.0,
                   help="on SIGTERM/SIGINT, how long requests in flight may take to finish")
    return p


def main(argv=None):
    """Console entry point: serve until SIGTERM or SIGINT, then stop gracefully; returns the exit code."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = vars(args)
    grace = options.pop("grace_seconds")
    try:
        server = ModelServer(**options)
        server.start()
    except (ValueError, OSError, ServingError) as e:
        log.error("%s", e.message if isinstance(e, ServingError) else e)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: stop.set())
    while not stop.wait(1.0):
        pass
    log.info("Stopping: finishing requests in flight (up to %g s)", grace)
    server.stop(grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
