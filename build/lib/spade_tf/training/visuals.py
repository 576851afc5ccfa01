"""Training sample grids: one row per example, columns colourised layout | generated | real."""

import pathlib

import numpy as np
from PIL import Image

from spade_tf.data.classes import colorize, palette


def to_uint8(images) -> np.ndarray:
    """Float images in [-1, 1] -> uint8 0..255."""
    return np.round(np.clip((np.asarray(images, np.float32) + 1.0) * 127.5, 0, 255)).astype(np.uint8)


def sample_grid(label, fake, real, data_cfg) -> np.ndarray:
    """uint8 [B * H, 3 * W, 3] from label maps [B, H, W] and images [B, H, W, 3] in [-1, 1]."""
    colours = colorize(np.asarray(label), palette(data_cfg.dataset_mode, data_cfg.label_nc))
    rows = np.concatenate([colours, to_uint8(fake), to_uint8(real)], axis=2)  # [B, H, 3W, 3]
    return rows.reshape(-1, *rows.shape[2:])


def save_png(grid, path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(grid).save(tmp)
    tmp.replace(path)
    return path
