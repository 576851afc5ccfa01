"""The studio's web app (Flask): the page, and a JSON/PNG API that calls the model server through the light
client (`spade_tf_client`, gRPC or REST), so the studio's process never loads TensorFlow.

    GET  /                 the painting page (static HTML/JS/CSS)
    GET  /api/model        class names, palette and size rules from labels.json
    GET  /api/status       the model server's version states, or why it cannot be reached (503)
    POST /api/synthesize   form: layout (PNG), seed or z -> the image (PNG)
    POST /api/layout       form: layout (label PNG: indices or palette colours) -> {height, width, labels (base64)}
    POST /api/style        form: style (a photo; VAE models) -> {z}

Errors are JSON `{"error": message}` (plus "detail" when the model server is unreachable) with a
4xx/5xx status, never a traceback.
"""

import base64
import logging
import threading

import flask
import grpc
import numpy as np
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.serving import WSGIRequestHandler, make_server

from spade_tf_client import LabelsJson, SpadeClient, SpadeClientError, read_labels_json

from serving.studio.layouts import InputError, parse_seed, parse_z, png_bytes, read_layout, read_style_photo

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 16 * 2**20
DEFAULT_TIMEOUT = 10.0  # seconds per model server call: how long the page waits when the server is down


def create_app(client, labels, *, model="spade", timeout=DEFAULT_TIMEOUT) -> flask.Flask:
    """The studio app.

    `client`: the model server's address ("host:port" for gRPC, "http://host:port" for REST; a
    `SpadeClient` for `model` with `timeout` is made), or a callable returning a client with
    `synthesize`, `encode_style` and `status` (called once). `labels`: the model's labels.json as a
    dict or `LabelsJson`, or a path that `read_labels_json` takes.
    """
    if isinstance(labels, dict):
        labels = LabelsJson.from_dict(labels)
    elif not isinstance(labels, LabelsJson):
        labels = read_labels_json(labels)
    if isinstance(client, str):
        address = client
        client = SpadeClient(address, model=model, timeout=timeout)
    else:
        client = client()
        address = getattr(client, "address", "the model server")

    app = flask.Flask(__name__, static_folder="static", static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_BYTES
    app.extensions["spade_studio"] = client
    _add_routes(app, client, labels, address)
    _add_error_handlers(app, address)
    return app


def _model_error(e: SpadeClientError, address):
    """(JSON body, HTTP status) for a failed model server call; "detail" holds the server's message."""
    if e.code == grpc.StatusCode.UNAVAILABLE:
        message = f"The model server at {address} is not reachable: is it running, and is the address right?"
        return {"error": message, "detail": str(e)}, 503
    if e.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return {"error": f"The model server did not answer in time (the studio's --timeout): {e}"}, 504
    if e.code == grpc.StatusCode.INVALID_ARGUMENT:
        return {"error": f"The model server refused the request: {e}"}, 400
    return {"error": f"The model server failed: {e}"}, 502


def _upload(field, what):
    file = flask.request.files.get(field)
    if file is None:
        raise InputError(f"no {what}: send it as the file field '{field}' of a multipart form")
    data = file.read()
    if not data:
        raise InputError(f"the {what} file is empty")
    return data


def _synthesis_options(labels: LabelsJson, label_map):
    """The client's keyword arguments from the form: seed or z, and the instance map."""
    seed, z = flask.request.form.get("seed", ""), flask.request.form.get("z", "")
    options = {}
    if seed and z:
        raise InputError("give a seed or a style code z, not both")
    if z:
        if not labels.use_vae:
            raise InputError("this model has no style input (it is not a VAE model): send a seed instead of z")
        options["z"] = parse_z(z, labels.z_dim)
    elif seed:
        options["seed"] = parse_seed(seed)
    if labels.use_instance:  # one instance per class region: the edge map is the class boundaries
        options["instance_map"] = label_map.astype(np.int32)
    return options


def _add_routes(app, client, labels: LabelsJson, address):
    @app.get("/")
    def page():
        return app.send_static_file("index.html")

    @app.get("/api/model")
    def model_config():
        return {**labels.to_dict(), "server": address}

    @app.get("/api/status")
    def status():
        try:
            return {"ok": True, "versions": client.status()}
        except SpadeClientError as e:
            body, code = _model_error(e, address)
            return {"ok": False, **body}, code

    @app.post("/api/synthesize")
    def synthesize():
        label_map = read_layout(_upload("layout", "layout"), labels)
        image = client.synthesize(label_map, **_synthesis_options(labels, label_map))
        response = flask.make_response(png_bytes(image))
        response.headers["Content-Type"] = "image/png"
        return response

    @app.post("/api/layout")
    def layout():
        label_map = read_layout(_upload("layout", "layout"), labels)
        return {"height": label_map.shape[0], "width": label_map.shape[1],
                "labels": base64.b64encode(label_map.tobytes()).decode("ascii")}

    @app.post("/api/style")
    def style():
        if not labels.use_vae:
            raise InputError("this model takes no style photo (it is not a VAE model): use the seed")
        photo = read_style_photo(_upload("style", "style photo"), labels.image_size)
        return {"z": client.encode_style(photo)[0].tolist()}

    @app.after_request
    def no_store(response):
        if flask.request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response


def _add_error_handlers(app, address):
    @app.errorhandler(InputError)
    def input_error(e):
        return _error(str(e), 400)

    @app.errorhandler(SpadeClientError)
    def client_error(e):
        return _model_error(e, address)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(e):
        return _error(f"the upload is too large: the studio takes at most {MAX_UPLOAD_BYTES // 2**20} MiB", 413)

    @app.errorhandler(HTTPException)
    def http_error(e):
        return _error(f"{e.code} {e.name}: {e.description}", e.code)

    @app.errorhandler(Exception)
    def internal_error(e):
        log.exception("request %s %s failed", flask.request.method, flask.request.path)
        return _error(f"internal error in the studio ({type(e).__name__}: {e}); see the studio's log", 500)


def _error(message, code):
    return flask.jsonify(error=message), code


class _RequestHandler(WSGIRequestHandler):
    """Logs only failed requests: the page sends one per brush stroke."""

    def log_request(self, code="-", size="-"):
        if str(getattr(code, "value", code))[:1] in ("4", "5"):
            super().log_request(code, size)


class StudioServer:
    """A studio app served by werkzeug in a background thread: `.url`, `.port`, `.stop()`."""

    def __init__(self, app, host="127.0.0.1", port=8080):
        self.app = app
        self._server = make_server(host, port, app, threaded=True, request_handler=_RequestHandler)
        self.host, self.port = host, self._server.server_port
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="studio", daemon=True)
        self._thread.start()

    def stop(self):
        """Stop serving and close the gRPC client."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        close = getattr(self.app.extensions["spade_studio"], "close", None)
        if close is not None:
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def serve_studio(client, labels, *, host="127.0.0.1", port=8080, model="spade",
                 timeout=DEFAULT_TIMEOUT) -> StudioServer:
    """Serve `create_app(client, labels, ...)` on host:port (0: a free port) in a thread; returns the handle."""
    return StudioServer(create_app(client, labels, model=model, timeout=timeout), host, port)
