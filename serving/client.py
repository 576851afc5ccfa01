"""Client for a SPADE model behind TF Serving's gRPC API (stock TF Serving or `serving.server`).

    client = SpadeClient("localhost:8500", model="spade")
    image = client.synthesize(label_map, seed=3)  # uint8 [H, W, 3]

Command line:

    python -m serving.client --server localhost:8500 --model spade --label labels.png --out image.png \
        [--seed N] [--instance inst.png] [--labels_json path | --model_base_path exports/spade]
"""

import argparse
import json
import pathlib
import re
import sys

import grpc
import numpy as np
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2_grpc)

MAX_MESSAGE_BYTES = 2**31 - 1  # as TF Serving's server; grpcio's default receive limit is 4 MiB
Z_DIM = 256


class SpadeClientError(Exception):
    """A request failed: `code` is the gRPC status code (None for problems found on this side)."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


class SpadeClient:
    """Synthesize images, read metadata and status from a model server."""

    def __init__(self, address="localhost:8500", model="spade", version=None, version_label=None, timeout=30.0,
                 root_certificates=None, labels_path=None):
        if version is not None and version_label is not None:
            raise ValueError("give version or version_label, not both")
        self.address, self.model, self.timeout = address, model, timeout
        self.version, self.version_label = version, version_label
        self.labels_path = labels_path
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        if root_certificates is None:
            self._channel = grpc.insecure_channel(address, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(address, credentials, options=options)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

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
        image = self._predict(signature, inputs)["image"]
        return image[0] if single else image

    def encode_style(self, style_image):
        """Style image uint8 [H, W, 3] or [B, H, W, 3] -> z float32 [B, 256] (VAE models only)."""
        image = _integer_array(style_image, "style_image", 0, 255).astype(np.uint8)
        image = image[None] if image.ndim == 3 else image
        if image.ndim != 4 or image.shape[-1] != 3:
            raise ValueError(f"style_image must be [H, W, 3] or [B, H, W, 3], got shape {image.shape}")
        return self._predict("encode_style", {"image": image}, output_filter=["z"])["z"]

    def metadata(self):
        """{"model", "version", "signatures": {name: {"inputs"|"outputs": {alias: {"dtype", "shape"}}}}}."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=self._model_spec(),
                                                                 metadata_field=["signature_def"])
        response = self._call(self._predictions.GetModelMetadata, request)
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_defs)

        def tensors(infos):
            def shape(info):
                return None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]

            return {alias: {"dtype": tf.dtypes.as_dtype(info.dtype).name, "shape": shape(info)}
                    for alias, info in sorted(infos.items())}

        return {"model": response.model_spec.name, "version": response.model_spec.version.value,
                "signatures": {name: {"inputs": tensors(s.inputs), "outputs": tensors(s.outputs)}
                               for name, s in sorted(signature_defs.signature_def.items())
                               if not name.startswith("__")}}  # skips __saved_model_init_op

    def status(self):
        """[{"version", "state" (e.g. "AVAILABLE"), "error_code", "error_message"}] of the model's versions."""
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=self._model_spec())
        response = self._call(self._models.GetModelStatus, request)
        state_name = get_model_status_pb2.ModelVersionStatus.State.Name
        return [{"version": s.version, "state": state_name(s.state), "error_code": s.status.error_code,
                 "error_message": s.status.error_message} for s in response.model_version_status]

    def labels(self):
        """The model's `assets.extra/labels.json` (class names, palette, ...), read from `labels_path`.

        TF Serving cannot return files, so this needs a local copy of the export: `labels_path` is the
        labels.json, a version folder, or the model base path (its newest version is used).
        """
        if self.labels_path is None:
            raise SpadeClientError("no labels: the server cannot send labels.json; create the client with "
                                   "labels_path=<export folder, version folder or labels.json>")
        return read_labels_json(self.labels_path)

    def _model_spec(self, signature_name=""):
        spec = model_pb2.ModelSpec(name=self.model, signature_name=signature_name)
        if self.version is not None:
            spec.version.value = self.version
        elif self.version_label is not None:
            spec.version_label = self.version_label
        return spec

    def _predict(self, signature, inputs, output_filter=()):
        request = predict_pb2.PredictRequest(model_spec=self._model_spec(signature), output_filter=output_filter)
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(tf.make_tensor_proto(np.ascontiguousarray(value)))
        response = self._call(self._predictions.Predict, request)
        return {alias: tf.make_ndarray(proto) for alias, proto in response.outputs.items()}

    def _call(self, rpc, request):
        try:
            return rpc(request, timeout=self.timeout, wait_for_ready=True)
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


def read_labels_json(path):
    """labels.json from its path, a version folder, or a model base path (newest numbered version)."""
    path = pathlib.Path(path)
    if path.is_dir():
        if not (path / "assets.extra" / "labels.json").exists():
            versions = [p for p in path.iterdir() if re.fullmatch(r"\d+", p.name) and p.is_dir()]
            if not versions:
                raise SpadeClientError(f"{path} has no assets.extra/labels.json and no numbered version folders")
            path = max(versions, key=lambda p: int(p.name))
        path = path / "assets.extra" / "labels.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SpadeClientError(f"cannot read labels from {path}: {e}") from None


def _integer_array(value, name, low, high):
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    if array.size and (array.min() < low or array.max() > high):
        raise ValueError(f"{name} values must be in {low}..{high}, got {array.min()}..{array.max()}")
    return array


# command line


class InputFileError(Exception):
    """A file given on the command line cannot be used (exit code 2)."""


def read_label_png(path, palette=None):
    """A label PNG -> class indices uint8 [H, W].

    Single-channel (L, P, I) images hold class indices; RGB images are colour-coded with `palette`
    (labels.json's, one colour per class).
    """
    image = _open_image(path)
    if image.mode in ("RGB", "RGBA"):
        if palette is None:
            raise InputFileError(f"{path} is a colour (RGB) label map: give --labels_json or --model_base_path so "
                                 "that its colours can be mapped to classes, or use a single-channel index PNG")
        return _colours_to_classes(np.asarray(image.convert("RGB")), np.asarray(palette, np.int64), path)
    indices = _single_channel(image, path)
    if indices.size and (indices.min() < 0 or indices.max() > 255):
        raise InputFileError(f"{path} holds values {indices.min()}..{indices.max()}; class indices are 0..255")
    return indices.astype(np.uint8)


def read_instance_png(path):
    """An instance PNG (single channel, one id per object) -> int32 [H, W]."""
    return _single_channel(_open_image(path), path).astype(np.int32)


def _open_image(path):
    try:
        image = Image.open(path)
        image.load()
        return image
    except (OSError, Image.UnidentifiedImageError) as e:
        raise InputFileError(f"cannot read image {path}: {e}") from None


def _single_channel(image, path):
    if image.mode in ("L", "P") or image.mode.startswith("I"):
        return np.asarray(image).astype(np.int64)
    raise InputFileError(f"{path} has image mode {image.mode}; expected a single-channel PNG (L, P or I) "
                         "of indices, or RGB for colour-coded labels")


def _colours_to_classes(rgb, palette, path):
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    palette_codes = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    order = np.argsort(palette_codes)
    where = np.clip(np.searchsorted(palette_codes[order], codes), 0, len(order) - 1)
    found = palette_codes[order][where] == codes
    if not found.all():
        y, x = (int(i) for i in np.argwhere(~found)[0])
        raise InputFileError(f"{path}: colour {tuple(int(c) for c in rgb[y, x])} at (x={x}, y={y}) is not in the "
                             f"model's palette of {len(palette)} classes (labels.json)")
    return order[where].astype(np.uint8)


def parser():
    p = argparse.ArgumentParser(prog="python -m serving.client", description="Synthesize an image from a label map.")
    p.add_argument("--server", default="localhost:8500", help="host:port of the gRPC model server")
    p.add_argument("--model", default="spade", help="model name on the server")
    p.add_argument("--version", type=int, help="model version (default: the newest served)")
    p.add_argument("--version_label", help="version label, e.g. stable")
    p.add_argument("--label", required=True, help="label map PNG: class indices, or RGB colours of the palette")
    p.add_argument("--instance", help="instance map PNG (models that use instance maps)")
    p.add_argument("--out", required=True, help="output image file (PNG)")
    p.add_argument("--seed", type=int, help="seed for a reproducible image")
    p.add_argument("--labels_json", help="the model's labels.json (or its export folder), for RGB label maps")
    p.add_argument("--model_base_path", help="local export folder: labels.json of its newest version")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the server")
    p.add_argument("--root_certificates", help="PEM root certificates: connect with TLS")
    return p


def main(argv=None):
    """Command line entry point; returns 0, 1 (server or connection error) or 2 (bad input files)."""
    args = parser().parse_args(argv)
    try:
        root_certificates = None
        if args.root_certificates:
            root_certificates = pathlib.Path(args.root_certificates).read_bytes()
        labels_path = args.labels_json or args.model_base_path
        client = SpadeClient(args.server, model=args.model, version=args.version, version_label=args.version_label,
                             timeout=args.timeout, root_certificates=root_certificates, labels_path=labels_path)
        palette = client.labels().get("palette") if labels_path else None
        label_map = read_label_png(args.label, palette)
        instance_map = read_instance_png(args.instance) if args.instance else None
    except (InputFileError, SpadeClientError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        with client:
            image = client.synthesize(label_map, instance_map=instance_map, seed=args.seed)
    except SpadeClientError as e:
        print(f"error: the server could not synthesize {args.label}: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        Image.fromarray(image).save(args.out)
    except (OSError, ValueError) as e:
        print(f"error: cannot write {args.out}: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({image.shape[1]} x {image.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
