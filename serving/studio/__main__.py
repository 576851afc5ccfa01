"""python -m serving.studio --server localhost:8500 --model spade (--labels_json PATH | --model_base_path PATH)
[--host 127.0.0.1] [--port 8080] [--timeout 10]"""

import argparse
import signal
import sys
import threading

from spade_tf_client import SpadeClientError, read_labels_json

from serving.studio.app import DEFAULT_TIMEOUT, serve_studio


def parser():
    p = argparse.ArgumentParser(prog=None,
                                description="A painting page for a SPADE model behind a gRPC model server.")
    p.add_argument("--server", default="localhost:8500", help="host:port of the gRPC model server, or http(s)://host:port of its REST API")
    p.add_argument("--model", default="spade", help="model name on the server")
    labels = p.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels_json", help="the model's labels.json (or its version folder)")
    labels.add_argument("--model_base_path", help="local export folder: labels.json of its newest version")
    p.add_argument("--host", default="127.0.0.1", help="address of the page (0.0.0.0: all interfaces)")
    p.add_argument("--port", type=int, default=8080, help="port of the page (0: a free port)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds to wait for the model server per request")
    return p


def main(argv=None):
    """Serve the page until SIGINT/SIGTERM; returns 0, 1 (cannot listen) or 2 (unusable labels.json)."""
    args = parser().parse_args(argv)
    try:
        labels = read_labels_json(args.labels_json or args.model_base_path)
        studio = serve_studio(args.server, labels, host=args.host, port=args.port, model=args.model,
                              timeout=args.timeout)
    except (SpadeClientError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    print(f"spade-tf studio for model '{args.model}' at {args.server}: open {studio.url} (Ctrl+C to stop)",
          flush=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: stop.set())
    while not stop.wait(1.0):
        pass
    studio.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
