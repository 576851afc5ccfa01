"""The main job on the built-in data: python -m spade_tf.demo [--out demo] [section.field=value ...]."""

import argparse
import pathlib
import sys

import numpy as np
from PIL import Image

from spade_tf.config import ConfigError, add_config_arguments, config_from_args


def simple_layout(label_nc, height, width):
    """Sky over a horizon, ground below, a blob of another class: a layout with a few classes."""
    y, x = np.mgrid[0:height, 0:width]
    label = np.where(y < height * 0.45, 0, 1 % label_nc).astype(np.uint8)
    blob = (y - height * 0.7) ** 2 + (x - width * 0.3) ** 2 < (min(height, width) * 0.18) ** 2
    label[blob] = 2 % label_nc
    return label


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo", help="folder for the pictures")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from spade_tf.models import build_generator
    from spade_tf.semantics import semantic_input

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    h, w = cfg.image_size
    label = simple_layout(cfg.data.label_nc, h, w)
    instance = None if cfg.data.no_instance else label.astype(np.int32)
    segmap = semantic_input(label[None], None if instance is None else instance[None], label_nc=cfg.data.label_nc,
                            contain_dontcare_label=cfg.data.contain_dontcare_label, use_instance=not cfg.data.no_instance)
    generator = build_generator(cfg)
    inputs = {"semantics": segmap, "z": np.random.default_rng(0).normal(size=(1, 256)).astype("float32")} \
        if cfg.model.use_vae else segmap
    image = np.asarray(generator(inputs, training=False))[0]
    Image.fromarray((label * (255 // max(1, cfg.data.label_nc - 1))).astype(np.uint8)).save(out / "layout.png")
    Image.fromarray(np.round((image + 1) * 127.5).clip(0, 255).astype(np.uint8)).save(out / "generated.png")
    print(f"wrote {out / 'layout.png'} and {out / 'generated.png'} ({h}x{w}, untrained {cfg.name} generator)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
