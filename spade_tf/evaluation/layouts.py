"""The layouts to synthesise from: a folder of label PNGs or a dataset split read with the model's config.

A label PNG holds class indices (8/16-bit grey or palette mode) or colours of the dataset's
palette; it is resized nearest-neighbour to the model's trained size when it differs. A model
that uses instance maps gets the label map as instance map, so class boundaries are its edges.
"""

import dataclasses
import pathlib
import typing

import numpy as np
from PIL import Image
from spade_tf_client import contract

from spade_tf.config import replace
from spade_tf.data import build_dataset, list_files
from spade_tf.data.classes import palette as dataset_palette
from spade_tf.data.datasets import natural_key, split_folder
from spade_tf.training.visuals import to_uint8


@dataclasses.dataclass
class Layout:
    """One layout: uint8 class ids [H, W] (255 = unknown), int32 instance ids or None, uint8 photo or None."""

    stem: str
    label: np.ndarray
    instance: typing.Optional[np.ndarray] = None
    real: typing.Optional[np.ndarray] = None


def palette(cfg) -> np.ndarray:
    """The colours of the config's dataset, uint8 [label_nc, 3]."""
    return dataset_palette(cfg.data.dataset_mode, cfg.data.label_nc)


def read_label_png(path, cfg) -> np.ndarray:
    """A label PNG -> uint8 class ids [H, W] at the model's trained size; ValueError naming the file."""
    d = cfg.data
    try:  # the export contract's reader and label-value rule
        label = contract.read_label_png(path, palette(cfg), what=f"label file {path}",
                                        unknown_label=contract.UNKNOWN_LABEL if d.contain_dontcare_label else None)
        bad = contract.invalid_labels(label, d.label_nc, d.contain_dontcare_label)
        if bad.any():
            raise ValueError(f"label file {path}: label map has values {np.unique(label[bad])[:10].tolist()} outside "
                             f"the label set; expected {contract.allowed_labels(d.label_nc, d.contain_dontcare_label)}")
    except contract.ContractError as e:
        raise ValueError(str(e)) from None
    height, width = cfg.image_size
    if label.shape != (height, width):
        label = np.asarray(Image.fromarray(label).resize((width, height), Image.NEAREST))
    return label


def label_folder(folder, cfg, how_many=0) -> typing.Tuple[int, typing.Iterator[Layout]]:
    """(count, layouts) of the first `how_many` (0: all) label PNGs in `folder`, in name order."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"label folder {folder} does not exist")
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file()), key=natural_key)
    if not files:
        raise ValueError(f"no label PNGs (*.png) in {folder}")
    files = files[:how_many or None]

    def layouts():
        for path in files:
            label = read_label_png(path, cfg)
            yield Layout(path.stem, label, label.astype(np.int32) if not cfg.data.no_instance else None)

    return len(files), layouts()


def dataset_layouts(cfg, split, batch_size, how_many=0) -> typing.Tuple[int, typing.Iterator[Layout]]:
    """(count, layouts) of the first `how_many` (0: all) samples of a dataset split, read and
    preprocessed as in evaluation (no flip).

    File datasets stop at a bad file (data.on_bad_file is taken as "stop"): a dropped sample would
    shift the names of the outputs after it.
    """
    if cfg.data.dataset_mode == "synthetic":
        count = min(cfg.data.synthetic_size, how_many or cfg.data.synthetic_size)
        cfg = replace(cfg, {"data": {"synthetic_size": count}})
        stems = (f"{split_folder(split)}_{i:05d}" for i in range(count))
    else:
        limit = min((n for n in (cfg.data.max_dataset_size, how_many) if n), default=0)
        cfg = replace(cfg, {"data": {"on_bad_file": "stop", "max_dataset_size": limit}})
        samples = list_files(cfg.data, split)
        count = len(samples)
        stems = (pathlib.Path(s.label).stem for s in samples)

    def layouts():
        for batch in build_dataset(cfg, split, batch_size=batch_size).as_numpy_iterator():
            instances = batch.get("instance")
            for i, label in enumerate(batch["label"]):
                instance = None if instances is None else instances[i].astype(np.int32)
                yield Layout(next(stems), label.astype(np.uint8), instance, to_uint8(batch["image"][i]))

    return count, layouts()
