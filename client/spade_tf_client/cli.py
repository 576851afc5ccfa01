"""spade-tf-client: synthesize an image from a label PNG with a model behind TF Serving's gRPC or REST API.

    spade-tf-client --server localhost:8500 --model spade --label labels.png --out image.png [--seed N]
        [--instance inst.png] [--labels_json path | --model_base_path exports/spade]
    spade-tf-client --server http://localhost:8501 ...      # the REST API
"""

import argparse
import pathlib
import sys

import numpy as np
from PIL import Image

from spade_tf_client.client import SpadeClient, SpadeClientError
from spade_tf_client.contract import ContractError, read_instance_png, read_label_png


def parser(prog="spade-tf-client"):
    p = argparse.ArgumentParser(prog=prog, description="Synthesize an image from a label map.")
    p.add_argument("--server", default="localhost:8500",
                   help="host:port of the gRPC model server, or http(s)://host:port of its REST API")
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


def main(argv=None, prog="spade-tf-client"):
    """Command line entry point; returns 0, 1 (server or connection error) or 2 (bad input files)."""
    args = parser(prog).parse_args(argv)
    try:
        root_certificates = None
        if args.root_certificates:
            root_certificates = pathlib.Path(args.root_certificates).read_bytes()
        labels_path = args.labels_json or args.model_base_path
        client = SpadeClient(args.server, model=args.model, version=args.version, version_label=args.version_label,
                             timeout=args.timeout, root_certificates=root_certificates, labels_path=labels_path)
        labels = client.labels_json() if labels_path else None
        label_map = read_label_png(args.label, None if labels is None else labels.palette_array)
        instance_map = read_instance_png(args.instance) if args.instance else None
        if labels is not None and labels.use_instance and instance_map is None:
            raise ContractError("this model uses instance maps (use_instance in labels.json): give --instance, a "
                                "single-channel PNG of instance ids (the label PNG itself gives one instance per "
                                "class region)")
    except (ContractError, SpadeClientError, OSError, ValueError) as e:
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
        Image.fromarray(np.asarray(image, np.uint8)).save(args.out)
    except (OSError, ValueError) as e:
        print(f"error: cannot write {args.out}: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({image.shape[1]} x {image.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
