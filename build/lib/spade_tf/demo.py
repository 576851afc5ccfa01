"""The main job on the built-in data, end to end:

train SPADE briefly (resuming the run if it exists), export it as a TF Serving SavedModel, start
the embedded TF-Serving-compatible gRPC server on the export, query it with the client for a
held-out layout, write the picture, stop the server.

    python -m spade_tf.demo [--steps 400] [--out demo] [--keep-serving | --studio] [section.field=value ...]

`--studio` then also starts the painting page on the server and prints its address.
"""

import argparse
import logging
import pathlib
import sys
import threading

import numpy as np
from PIL import Image

from spade_tf.config import ConfigError, add_config_arguments, config_from_args


def side_by_side(*images):
    """uint8 RGB images of one height, with a white gutter between them."""
    h = images[0].shape[0]
    gutter = np.full((h, 4, 3), 255, np.uint8)
    parts = []
    for image in images:
        parts += [image, gutter]
    return np.concatenate(parts[:-1], axis=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo", help="folder for the pictures and the export (default: demo)")
    parser.add_argument("--steps", type=int, default=400, help="training steps in all (a rerun resumes up to it)")
    parser.add_argument("--seed", type=int, default=0, help="seed sent with the request")
    parser.add_argument("--keep-serving", action="store_true", help="leave the server running until Ctrl-C")
    parser.add_argument("--studio", action="store_true", help="also start the painting page (implies --keep-serving)")
    parser.add_argument("--studio_port", type=int, default=8080, help="painting page port (default 8080)")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = pathlib.Path(args.out)
    try:
        cfg = config_from_args(args)
        if cfg.data.dataset_mode != "synthetic":
            raise ConfigError("the demo runs on the built-in data: use --config synthetic (the default)")
        cfg.train.max_steps = args.steps
        cfg.train.checkpoints_dir = str(out / "checkpoints")
        cfg.train.save_every_steps = min(cfg.train.save_every_steps, max(1, args.steps // 2))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from serving.client import SpadeClient
    from serving.server import ModelServer
    from spade_tf.data import classes, pipeline
    from spade_tf.export import export_run
    from spade_tf.training.trainer import Trainer

    print(f"[1/4] training {cfg.name} on the built-in data for {args.steps} steps (resumes if already trained)")
    run_dir = Trainer(cfg).train()

    print(f"[2/4] exporting {run_dir} as a TF Serving SavedModel")
    export_dir = out / "exports" / cfg.export.model_name
    version_dir = export_run(run_dir, export_dir=export_dir)
    print(f"      wrote {version_dir}")

    print("[3/4] starting the embedded TF-Serving-compatible gRPC server")
    server = ModelServer(port=args.port, model_name=cfg.export.model_name, model_base_path=str(export_dir))
    port = server.start()
    address = f"127.0.0.1:{port}"
    print(f"      serving {cfg.export.model_name} at {address}")
    try:
        print("[4/4] querying it with the client for a held-out layout")
        batch = next(iter(pipeline.build_dataset(cfg, "val", batch_size=1)))
        label = np.asarray(batch["label"][0]).astype(np.uint8)
        instance = None if cfg.data.no_instance else np.asarray(batch["instance"][0])
        real = np.round((np.asarray(batch["image"][0]) + 1) * 127.5).astype(np.uint8)
        with SpadeClient(address, model=cfg.export.model_name, timeout=120) as client:
            image = client.synthesize(label, instance_map=instance, seed=args.seed)
        layout = classes.colorize(label, classes.palette(cfg.data.dataset_mode, cfg.data.label_nc))
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(out / "generated.png")
        Image.fromarray(layout).save(out / "layout.png")
        Image.fromarray(side_by_side(layout, image, real)).save(out / "layout_generated_real.png")
        print(f"      wrote {out / 'generated.png'} and {out / 'layout_generated_real.png'} (layout | generated | real)")
        if args.studio:
            from serving.studio.app import serve_studio

            studio = serve_studio(address, str(version_dir / "assets.extra" / "labels.json"),
                                  port=args.studio_port, model=cfg.export.model_name)
            print(f"      painting page: open {studio.url} (Ctrl-C stops it and the server)")
        if args.keep_serving or args.studio:
            print(f"      the server keeps running at {address} (Ctrl-C stops it)")
            threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
