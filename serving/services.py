"""TF Serving's gRPC services: PredictionService (Predict, GetModelMetadata) and ModelService.

The lower-case methods take a request and return the response or raise ServingError; the gRPC
methods wrap them (a ServingError becomes its status, anything else INTERNAL with one line), and the
REST API calls the lower-case ones too.
"""

import functools
import logging

import grpc
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_management_pb2,
                                     model_service_pb2_grpc, prediction_service_pb2_grpc, status_pb2)

from serving import predict
from serving.errors import ServingError, internal_error, truncated
from serving.inflight import InFlight

log = logging.getLogger(__name__)


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

    Predictions run through `in_flight` (`serving.inflight.InFlight`), which a stop can cancel.
    """

    def __init__(self, manager, scheduler, max_pixels, in_flight=None):
        self.manager, self._scheduler, self._max_pixels = manager, scheduler, max_pixels
        self._in_flight = in_flight or InFlight()

    def predict(self, request):
        _require_model_spec(request)
        servable = self.manager.resolve(request.model_spec)
        return self._in_flight.run(
            lambda: predict.predict(servable, request, max_pixels=self._max_pixels, scheduler=self._scheduler))

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
