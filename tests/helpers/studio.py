"""The painting page's tests share these: PNG bytes in and out, the built-in data's class names, and a
stand-in export named like it."""

import io
import json

import numpy as np
from PIL import Image

from helpers.standin_model import write_standin_model

SYNTHETIC_NAMES = ["sky", "mountain", "water", "grass", "tree", "building", "road", "object"]
SKY, MOUNTAIN, WATER, GRASS, TREE, BUILDING, ROAD = range(7)


def png(array, palette=None, fmt="PNG"):
    image = Image.fromarray(np.asarray(array))
    if palette is not None:
        image.putpalette(np.asarray(palette, np.uint8).ravel().tolist())
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def decode(data):
    return np.asarray(Image.open(io.BytesIO(data)))


def write_studio_standin(base):
    """A stand-in export at `base` (palette[label] + seeded noise, 8 classes, 64x64) whose classes are
    named like the built-in data's; returns `base`."""
    version = write_standin_model(base, 1, label_nc=8, size=(64, 64))
    labels_path = version / "assets.extra" / "labels.json"
    labels = json.loads(labels_path.read_text())
    labels["class_names"] = SYNTHETIC_NAMES
    labels_path.write_text(json.dumps(labels))
    return base
