"""The studio: paint a layout in the browser, get the model's image back (NVIDIA's GauGAN demo, for spade-tf).

    python -m serving.studio --server localhost:8500 --model spade --model_base_path exports/spade --port 8080

The web process reads the class names and palette from the export's labels.json and reaches the
model only through the gRPC client (`serving.client.SpadeClient`), so the model can be served by the
embedded server or by stock TF Serving. From Python:

    studio = serve_studio("localhost:8500", "exports/spade", port=0)  # or create_app(...) for a WSGI app
    print(studio.url); ...; studio.stop()
"""

from serving.studio.app import StudioServer, create_app, serve_studio

__all__ = ["StudioServer", "create_app", "serve_studio"]
