"""`SpadeClient`: a SPADE model behind TF Serving's gRPC or REST API (stock TF Serving or spade-tf's server).

    with SpadeClient("localhost:8500", model="spade") as client:          # gRPC
        image = client.synthesize(label_map, seed=3)                        # uint8 [H, W, 3]
    SpadeClient("http://localhost:8501", model="spade")                     # REST (https:// for TLS)

Needs grpcio, protobuf and NumPy only: the messages are this package's (`spade_tf_client.protos`).
"""

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request

import grpc
import numpy as np

from spade_tf_client import contract, tensors
from spade_tf_client.protos import (POOL, get_model_metadata_pb2, get_model_status_pb2, model_pb2, predict_pb2,
                                    prediction_service_pb2)

MAX_MESSAGE_BYTES = 2**31 - 1  # as TF Serving's server; grpcio's default receive limit is 4 MiB
OUTPUT_DTYPES = {"image": np.uint8, "z": np.float32, "mu": np.float32, "logvar": np.float32}  # REST answers
HTTP_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,  # TF Serving's mapping
              429: grpc.StatusCode.RESOURCE_EXHAUSTED, 501: grpc.StatusCode.UNIMPLEMENTED,
              503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}

del prediction_service_pb2  # imported for its service descriptors, which POOL now holds


class SpadeClientError(Exception):
    """A request failed: `code` is the gRPC status code (None for problems found on this side)."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


def _method(service, name, request, response):
    """(path, serializer, deserializer) of a TF Serving RPC, from the service descriptor of the protos."""
    full_name = POOL.FindServiceByName(f"tensorflow.serving.{service}").methods_by_name[name].full_name
    return f"/{full_name.rsplit('.', 1)[0]}/{name}", request.SerializeToString, response.FromString


class SpadeClient:
    """Synthesize images, read metadata and status from a model server.

    `address`: "host:port" for gRPC, or "http://host:port" / "https://host:port" for the REST API.
    `root_certificates`: PEM bytes for TLS (gRPC; for REST use https://, None: the system's CAs).
    `timeout`: seconds per call, including waiting for the server to come up.
    `labels_path`: labels.json, a version folder or a model base path, for `labels()`.
    """

    def __init__(self, address="localhost:8500", model="spade", version=None, version_label=None, timeout=30.0,
                 root_certificates=None, labels_path=None):
        if version is not None and version_label is not None:
            raise ValueError("give version or version_label, not both")
        self.address, self.model, self.timeout = address, model, timeout
        self.version, self.version_label = version, version_label
        self.labels_path = labels_path
        self.rest = address.startswith(("http://", "https://"))
        self._channel = None
        if self.rest:
            self._ssl = ssl.create_default_context(cadata=root_certificates.decode() if root_certificates else None)
            return
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        if root_certificates is None:
            self._channel = grpc.insecure_channel(address, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(address, credentials, options=options)
        self._rpcs = {
            "Predict": self._channel.unary_unary(*_method("PredictionService", "Predict", predict_pb2.PredictRequest,
                                                          predict_pb2.PredictResponse)),
            "GetModelMetadata": self._channel.unary_unary(*_method(
                "PredictionService", "GetModelMetadata", get_model_metadata_pb2.GetModelMetadataRequest,
                get_model_metadata_pb2.GetModelMetadataResponse)),
            "GetModelStatus": self._channel.unary_unary(*_method(
                "ModelService", "GetModelStatus", get_model_status_pb2.GetModelStatusRequest,
                get_model_status_pb2.GetModelStatusResponse)),
        }

    def close(self):
        if self._channel is not None:
            self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- API -------------------------------------------------------------------------------------
    def synthesize(self, label_map, instance_map=None, seed=None, z=None, style_image=None):
        """Label map [H, W] (or a batch [B, H, W]) of class indices -> uint8 image [H, W, 3] ([B, H, W, 3]).

        The signature follows from the arguments: `seed` (an int, or one per item) -> `with_seed`;
        `z` ([256] or [B, 256]) -> `with_z`; `style_image` ([H, W, 3] uint8) -> `encode_style`, then
        `with_z`; none of them -> `serving_default` (random style).
        """
        if sum(x is not None for x in (seed, z, style_image)) > 1:
            raise ValueError("give at most one of seed, z and style_image")
        labels = _integer_array(label_map, "label_map", 0, 255).astype(np.uint8)
        single = labels.ndim == 2
        if single:
            labels = labels[None]
        if labels.ndim != 3:
            raise ValueError(f"label_map must be [H, W] or [B, H, W], got shape {labels.shape}")
        batch = labels.shape[0]
        inputs = {"label_map": labels}
        if instance_map is not None:
            instances = _integer_array(instance_map, "instance_map", -2**31, 2**31 - 1).astype(np.int32)
            instances = instances[None] if single else instances
            if instances.shape != labels.shape:
                raise ValueError(f"instance_map has shape {instances.shape}; it must match label_map {labels.shape}")
            inputs["instance_map"] = instances
        signature = "serving_default"
        if seed is not None:
            seeds = _integer_array(seed, "seed", -2**63, 2**63 - 1).astype(np.int64).reshape(-1)
            inputs["seed"] = np.broadcast_to(seeds, (batch,)) if seeds.size == 1 else seeds
            signature = "with_seed"
        if style_image is not None:
            z = self.encode_style(style_image)
        if z is not None:
            z = np.asarray(z, np.float32)
            z = z[None] if z.ndim == 1 else z
            inputs["z"] = np.broadcast_to(z, (batch, z.shape[-1])) if z.shape[0] == 1 else z
            signature = "with_z"
        image = self.predict(signature, inputs)["image"]
        return image[0] if single else image

    def encode_style(self, style_image):
        """Style image uint8 [H, W, 3] or [B, H, W, 3] -> z float32 [B, 256] (VAE models only)."""
        image = _integer_array(style_image, "style_image", 0, 255).astype(np.uint8)
        image = image[None] if image.ndim == 3 else image
        if image.ndim != 4 or image.shape[-1] != 3:
            raise ValueError(f"style_image must be [H, W, 3] or [B, H, W, 3], got shape {image.shape}")
        return self.predict("encode_style", {"image": image}, output_filter=["z"])["z"]

    def predict(self, signature, inputs, output_filter=()):
        """{alias: array} -> {alias: array} on one signature (any model, any inputs)."""
        if self.rest:
            return self._rest_predict(signature, inputs, output_filter)
        request = predict_pb2.PredictRequest(model_spec=self._model_spec(signature), output_filter=output_filter)
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(tensors.make_tensor_proto(value))
        response = self._call("Predict", request)
        return {alias: tensors.make_ndarray(proto) for alias, proto in response.outputs.items()}

    def metadata(self):
        """{"model", "version", "signatures": {name: {"inputs"|"outputs": {alias: {"dtype", "shape"}}}}}."""
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        if self.rest:
            answer = self._http("GET", "/metadata")
            spec = answer.get("model_spec", {})
            name, version = spec.get("name", self.model), int(spec.get("version", 0))
            _parse_json(answer.get("metadata", {}).get("signature_def", {}), signature_defs)
        else:
            request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=self._model_spec(),
                                                                     metadata_field=["signature_def"])
            response = self._call("GetModelMetadata", request)
            packed = response.metadata["signature_def"]
            if packed.type_url.rsplit("/", 1)[-1] != signature_defs.DESCRIPTOR.full_name:
                raise SpadeClientError(f"the server's metadata holds {packed.type_url}, not a SignatureDefMap")
            signature_defs.ParseFromString(packed.value)
            name, version = response.model_spec.name, response.model_spec.version.value

        def tensors_of(infos):
            def shape(info):
                return None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]

            return {alias: {"dtype": tensors.dtype_name(info.dtype), "shape": shape(info)}
                    for alias, info in sorted(infos.items())}

        return {"model": name, "version": version,
                "signatures": {key: {"inputs": tensors_of(s.inputs), "outputs": tensors_of(s.outputs)}
                               for key, s in sorted(signature_defs.signature_def.items())
                               if not key.startswith("__")}}  # skips __saved_model_init_op

    def status(self):
        """[{"version", "state" (e.g. "AVAILABLE"), "error_code", "error_message"}] of the model's versions."""
        response = get_model_status_pb2.GetModelStatusResponse()
        if self.rest:
            _parse_json(self._http("GET", ""), response)
        else:
            request = get_model_status_pb2.GetModelStatusRequest(model_spec=self._model_spec())
            response = self._call("GetModelStatus", request)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [{"version": s.version, "state": state_name(s.state), "error_code": s.status.error_code,
                 "error_message": s.status.error_message} for s in response.model_version_status]

    def labels(self) -> dict:
        """The model's `assets.extra/labels.json` (class names, palette, ...), read from `labels_path`.

        TF Serving cannot return files, so this needs a local copy of the export: `labels_path` is the
        labels.json, a version folder, or the model base path (its newest version is used).
        """
        return self.labels_json().to_dict()

    def labels_json(self) -> contract.LabelsJson:
        if self.labels_path is None:
            raise SpadeClientError("no labels: the server cannot send labels.json; create the client with "
                                   "labels_path=<export folder, version folder or labels.json>")
        return read_labels_json(self.labels_path)

    # --- gRPC ------------------------------------------------------------------------------------
    def _model_spec(self, signature_name=""):
        spec = model_pb2.ModelSpec(name=self.model, signature_name=signature_name)
        if self.version is not None:
            spec.version.value = self.version
        elif self.version_label is not None:
            spec.version_label = self.version_label
        return spec

    def _call(self, name, request):
        try:
            return self._rpcs[name](request, timeout=self.timeout, wait_for_ready=True)
        except grpc.RpcError as e:
            code = e.code()
            if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE) and not self._connected():
                raise SpadeClientError(f"could not reach the model server at {self.address} within {self.timeout} s "
                                       "(is it running, and is the address right?)",
                                       grpc.StatusCode.UNAVAILABLE) from None
            raise SpadeClientError(f"{code.name}: {e.details()}", code) from None

    def _connected(self):
        try:
            grpc.channel_ready_future(self._channel).result(timeout=0.1)
            return True
        except grpc.FutureTimeoutError:
            return False

    # --- REST ------------------------------------------------------------------------------------
    def _rest_predict(self, signature, inputs, output_filter):
        body = {"signature_name": signature, "inputs": {alias: np.asarray(v).tolist() for alias, v in inputs.items()}}
        outputs = self._http("POST", ":predict", body)["outputs"]
        if not isinstance(outputs, dict):  # one output: the tensor itself
            outputs = {"image" if signature != "encode_style" else "z": outputs}
        wanted = output_filter or list(outputs)
        return {alias: np.asarray(outputs[alias], OUTPUT_DTYPES.get(alias)) for alias in wanted}

    def _http(self, method, suffix, body=None):
        path = f"/v1/models/{urllib.parse.quote(self.model, safe='')}"
        if self.version is not None:
            path += f"/versions/{self.version}"
        elif self.version_label is not None:
            path += f"/labels/{urllib.parse.quote(self.version_label, safe='')}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.address.rstrip("/") + path + suffix, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self._ssl) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                message = json.loads(text)["error"]
            except (ValueError, KeyError, TypeError):
                message = text.strip() or e.reason
            code = HTTP_CODES.get(e.code, grpc.StatusCode.INTERNAL if e.code >= 500 else grpc.StatusCode.UNKNOWN)
            raise SpadeClientError(f"{code.name}: {message}", code) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            timed_out = isinstance(reason, TimeoutError) or "timed out" in str(reason)
            code = grpc.StatusCode.DEADLINE_EXCEEDED if timed_out else grpc.StatusCode.UNAVAILABLE
            raise SpadeClientError(f"could not reach the model server at {self.address} within {self.timeout} s "
                                   f"({reason}; is it running, and is the address right?)", code) from None
        except ValueError as e:
            raise SpadeClientError(f"the model server at {self.address} answered something that is not JSON: {e}",
                                   grpc.StatusCode.UNKNOWN) from None


def read_labels_json(path) -> contract.LabelsJson:
    """labels.json from its path, a version folder, or a model base path (newest numbered version)."""
    try:
        return contract.LabelsJson.read(path)
    except (OSError, ValueError) as e:
        raise SpadeClientError(f"cannot read labels from {path}: {e}") from None


def _parse_json(values, message):
    from google.protobuf import json_format

    try:
        json_format.ParseDict(values, message, ignore_unknown_fields=True)
    except json_format.ParseError as e:
        raise SpadeClientError(f"the model server's answer does not fit {message.DESCRIPTOR.name}: {e}") from None


def _integer_array(value, name, low, high):
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.size and (array.min() < low or array.max() > high):
        raise ValueError(f"{name} values must be in {low}..{high}, got {array.min()}..{array.max()}")
    return array


__all__ = ["SpadeClient", "SpadeClientError", "read_labels_json"]
