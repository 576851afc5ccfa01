"""TF Serving's REST API (`--rest_api_port`) on the models, checks and batching of the gRPC API.

`routes.RestApi` answers one request (TF Serving's routes, status codes and messages),
`json_tensor` converts JSON to tensors and back, `http_server.RestApiServer` is the HTTP server.
"""

from serving.rest.http_server import RestApiServer
from serving.rest.routes import RestApi

__all__ = ["RestApi", "RestApiServer"]
