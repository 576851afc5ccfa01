"""Find and pair a dataset's label, image and instance files in the reference's folder layouts.

`list_files` is the up-front check that runs before training: every folder exists, every label
has its image (and instance map), and every file is a complete image TensorFlow can decode
(header parsed, end-of-file marker present), with a label/instance format that holds class ids
and a size the preprocessing mode can crop. Label *values* are checked later, per file, by the
input pipeline as it decodes (`spade_tf.data.pipeline`), with the file named in the error.

With `data.on_bad_file == "stop"` (default) the first check that fails raises `DataError`
listing the bad files; with `"skip"` each bad sample is dropped with a warning naming the file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import re
import typing

from PIL import Image, UnidentifiedImageError

from spade_tf.data import preprocess

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")  # what tf.io.decode_image reads
FORMATS = ("PNG", "JPEG", "BMP")
ID_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L")  # single-channel ids: 8-bit, palette indices, 16-bit
MAX_LISTED = 10  # bad files named in one error message


class DataError(ValueError):
    """A dataset folder, file or file pairing is not what its layout requires."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One training example's files; `size` is the label map's (H, W), read from its header."""

    label: str
    image: str
    instance: typing.Optional[str] = None
    size: typing.Optional[typing.Tuple[int, int]] = None


def natural_key(path: str):
    """Sort key that orders "img2" before "img10" (the reference's natural sort)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def split_folder(split: str) -> str:
    """"train" -> "train"; "val" and "test" (the reference's test phase) -> "val"."""
    if split == "train":
        return "train"
    if split in ("val", "test"):
        return "val"
    raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")


# --- layouts -------------------------------------------------------------------------------

@dataclasses.dataclass
class _Role:
    """One kind of file (label, image, instance): where it lives and how its pairing key looks."""

    name: str
    folder: pathlib.Path
    files: typing.List[str]
    pattern: str  # the path expected below `folder` for a pairing key, e.g. "{city}/{key}_leftImg8bit.png"


def _scan(folder: pathlib.Path, recursive: bool, suffix: str = "") -> typing.List[str]:
    walk = folder.rglob("*") if recursive else folder.iterdir()
    files = [
        str(p) for p in walk
        if p.suffix.lower() in EXTENSIONS and p.name.endswith(suffix) and p.is_file()
    ]
    return sorted(files, key=natural_key)


def _require(folder: pathlib.Path, what: str, layout: str) -> pathlib.Path:
    if not folder.is_dir():
        raise DataError(f"{what} folder {folder} does not exist; expected layout: {layout}")
    return folder


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _cityscapes_key(path: str) -> str:
    return "_".join(os.path.basename(path).split("_")[:3])  # city_sequence_frame


CITYSCAPES_LAYOUT = (
    "<dataroot>/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png "
    "(+ _gtFine_instanceIds.png) and <dataroot>/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png"
)
ADE20K_LAYOUT = (
    "ADEChallengeData2016: <dataroot>/images/{training,validation}/ADE_{train,val}_*.jpg and "
    "<dataroot>/annotations/{training,validation}/ADE_{train,val}_*.png (or any tree below dataroot: "
    ".jpg images and .png labels, split by _train_ / _val_ in the file name)"
)
COCO_LAYOUT = (
    "<dataroot>/{train,val}_label/*.png, {train,val}_img/*.jpg, {train,val}_inst/*.png "
    "(+ optional train_label_portrait/, train_img_portrait/, train_inst_portrait/)"
)
FACADES_LAYOUT = "<dataroot>/{train,val}_label/*.png and {train,val}_img/*.jpg"
CUSTOM_LAYOUT = "data.label_dir, data.image_dir (and data.instance_dir unless data.no_instance)"
ANY_EXT = "{key}.<png|jpg|jpeg|bmp>"


def _cityscapes(cfg, split, use_instance):
    root = pathlib.Path(cfg.dataroot)
    gt = _require(root / "gtFine" / split, "Cityscapes label", CITYSCAPES_LAYOUT)
    left = _require(root / "leftImg8bit" / split, "Cityscapes image", CITYSCAPES_LAYOUT)
    roles = [
        _Role("label", gt, _scan(gt, True, "_labelIds.png"), "{city}/{key}_gtFine_labelIds.png"),
        _Role("image", left, _scan(left, True, "_leftImg8bit.png"), "{city}/{key}_leftImg8bit.png"),
    ]
    if use_instance:
        instances = _scan(gt, True, "_instanceIds.png")
        roles.append(_Role("instance", gt, instances, "{city}/{key}_gtFine_instanceIds.png"))
    return roles, _cityscapes_key


def _ade20k(cfg, split, use_instance):
    if use_instance:
        raise DataError("ADE20K has no instance maps: set data.no_instance=true")
    root = _require(pathlib.Path(cfg.dataroot), "ADE20K dataroot", ADE20K_LAYOUT)
    tag = f"_{split}_"
    files = [p for p in _scan(root, True) if tag in os.path.basename(p)]
    images = [p for p in files if p.lower().endswith((".jpg", ".jpeg"))]
    labels = [p for p in files if p.lower().endswith(".png")]
    sub = "training" if split == "train" else "validation"
    folders = {"images": root / "images" / sub, "annotations": root / "annotations" / sub}
    if not folders["images"].is_dir():  # the reference's single tree
        folders = {"images": root, "annotations": root}
    roles = [
        _Role("label", folders["annotations"], labels, "{key}.png"),
        _Role("image", folders["images"], images, "{key}.jpg"),
    ]
    return roles, _stem


def _folders_layout(cfg, split, use_instance, kinds, layout, dataset, portraits=False):
    if use_instance and len(kinds) < 3:
        raise DataError(f"{dataset} has no instance maps: set data.no_instance=true")
    root = pathlib.Path(cfg.dataroot)
    roles = []
    for role, kind in zip(("label", "image", "instance"), kinds):
        if role == "instance" and not use_instance:
            continue
        folder = _require(root / f"{split}_{kind}", f"{dataset} {role}", layout)
        files = _scan(folder, False)
        portrait = root / f"{split}_{kind}_portrait"  # the reference's optional extra training folders
        if portraits and split == "train" and portrait.is_dir():
            files = sorted(files + _scan(portrait, False), key=natural_key)
        roles.append(_Role(role, folder, files, ANY_EXT))
    return roles, _stem


def _coco(cfg, split, use_instance):
    kinds = ("label", "img", "inst")
    return _folders_layout(cfg, split, use_instance, kinds, COCO_LAYOUT, "COCO-Stuff", portraits=True)


def _facades(cfg, split, use_instance):
    return _folders_layout(cfg, split, use_instance, ("label", "img"), FACADES_LAYOUT, "Facades")


def _custom(cfg, split, use_instance):
    del split  # the reference reads the same folders in every phase
    dirs = {"label": cfg.label_dir, "image": cfg.image_dir}
    if use_instance:
        dirs["instance"] = cfg.instance_dir
    roles = []
    for role, d in dirs.items():
        if not d:
            hint = " or set data.no_instance=true" if role == "instance" else ""
            raise DataError(f"dataset_mode custom needs data.{role}_dir{hint}; expected layout: {CUSTOM_LAYOUT}")
        folder = _require(pathlib.Path(d), f"custom {role}", CUSTOM_LAYOUT)
        roles.append(_Role(role, folder, _scan(folder, False), ANY_EXT))
    return roles, _stem


LAYOUTS = {
    "cityscapes": (_cityscapes, CITYSCAPES_LAYOUT),
    "ade20k": (_ade20k, ADE20K_LAYOUT),
    "coco": (_coco, COCO_LAYOUT),
    "facades": (_facades, FACADES_LAYOUT),
    "custom": (_custom, CUSTOM_LAYOUT),
}


# --- pairing -------------------------------------------------------------------------------

def _pair_by_key(roles, key_fn, problems) -> typing.List[dict]:
    by_key = []
    for role in roles:
        files = {}
        for path in role.files:
            key = key_fn(path)
            if key in files:
                raise DataError(f"{role.name} files {files[key]} and {path} have the same name; keep one")
            files[key] = path
        by_key.append(files)
    label_files = by_key[0]
    keys = sorted(set().union(*by_key), key=lambda k: natural_key(label_files.get(k, k)))
    pairs = []
    for key in keys:
        have = [(role, files[key]) for role, files in zip(roles, by_key) if key in files]
        if len(have) == len(roles):
            pairs.append({role.name: path for role, path in have})
            continue
        named = ", ".join(f"{role.name} {path}" for role, path in have)
        for role, files in zip(roles, by_key):
            if key not in files:
                expected = role.folder / role.pattern.format(key=key, city=key.split("_")[0])
                problems.append(f"{named} has no {role.name}: expected {expected}")
    return pairs


def _pair_in_order(roles, problems) -> typing.List[dict]:
    n = min(len(r.files) for r in roles)
    if any(len(r.files) != n for r in roles):
        counts = ", ".join(f"{len(r.files)} {r.name} files in {r.folder}" for r in roles)
        for role in roles:
            for path in role.files[n:]:
                problems.append(f"{role.name} {path} is unpaired: found {counts} (paired in sorted order)")
    return [{r.name: r.files[i] for r in roles} for i in range(n)]


# --- file checks -----------------------------------------------------------------------------

def _inspect(path: str, role: str) -> typing.Tuple[int, int]:
    """(H, W) from the header; DataError unless the file is a complete image of a usable kind."""
    if os.path.getsize(path) == 0:
        raise DataError(f"{role} {path} is empty")
    with open(path, "rb") as f:
        try:
            with Image.open(f) as im:
                width, height, mode, fmt = im.width, im.height, im.mode, im.format
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise DataError(f"{role} {path} is not a readable image: {e}") from None
        if fmt not in FORMATS:
            raise DataError(f"{role} {path} is a {fmt} file; TF decodes {', '.join(FORMATS)}: convert it to PNG")
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 1024))
        tail = f.read()
    if (fmt == "PNG" and b"IEND" not in tail[-64:]) or (fmt == "JPEG" and b"\xff\xd9" not in tail):
        raise DataError(f"{role} {path} is truncated (its {fmt} end marker is missing)")
    if role != "image":
        if mode not in ID_MODES:
            what = "a colour image" if mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr") else f"a {mode}-mode image"
            raise DataError(
                f"{role} {path} is {what}; {role} maps must be single-channel ids (8- or 16-bit grayscale "
                f"or palette PNG). Convert colour-coded masks to class ids first: spade_tf.data.classes.decolorize"
            )
        if mode == "P" and fmt != "PNG":
            raise DataError(f"{role} {path} is a palette {fmt}; save palette label maps as PNG")
    return height, width


def _check_files(cfg, pairs, problems) -> typing.List[Sample]:
    samples = []
    for pair in pairs:
        try:
            sizes = {role: _inspect(path, role) for role, path in pair.items()}
        except DataError as e:
            problems.append(str(e))
            continue
        samples.append(Sample(pair["label"], pair["image"], pair.get("instance"), sizes["label"]))
    if samples:
        small = preprocess.too_small(cfg, [s.size[0] for s in samples], [s.size[1] for s in samples])
        mode = cfg.preprocess_mode
        for sample, bad in zip(samples, small):
            if bad:
                h, w = sample.size
                sh, sw = (int(v) for v in preprocess.scaled_size(cfg, h, w))
                if preprocess.crops(mode):
                    why = f"is {sh}x{sw} (HxW) after {mode}, smaller than crop_size {cfg.crop_size}"
                else:
                    why = f"becomes {sh}x{sw} (HxW) under preprocess_mode {mode}"
                problems.append(f"image {sample.image} (label {sample.label}, {h}x{w}) {why}")
        samples = [s for s, bad in zip(samples, small) if not bad]
    return samples


def _report(problems, cfg, what: str) -> None:
    if not problems:
        return
    if cfg.on_bad_file == "skip":
        for message in problems:
            log.warning("skipping a sample: %s", message)
        return
    listed = "\n  ".join(problems[:MAX_LISTED])
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    raise DataError(
        f"{what} ({len(problems)}; data.on_bad_file=skip drops them with a warning):\n  {listed}{more}"
    )


def list_files(cfg_data, split: str = "train") -> typing.List[Sample]:
    """The dataset's samples for `split` ("train", or "val"/"test" = the val split), checked up front.

    Pairs are ordered by the label files' natural sort order and cut to `max_dataset_size`.
    Raises DataError (on_bad_file="stop") or drops the sample with a warning ("skip") for an
    unpaired file, an unreadable, truncated or unsupported file, or a sample smaller than the crop.
    A missing folder or an empty dataset always raises.
    """
    mode = cfg_data.dataset_mode
    if mode not in LAYOUTS:
        raise ValueError(f"dataset_mode {mode!r} has no files to list; file layouts: {', '.join(LAYOUTS)}")
    preprocess.check_config(cfg_data)
    find, layout = LAYOUTS[mode]
    roles, key_fn = find(cfg_data, split_folder(split), not cfg_data.no_instance)
    for role in roles:
        if not role.files:
            raise DataError(
                f"no {role.name} files ({', '.join(EXTENSIONS)}) found in {role.folder} for the "
                f"{split_folder(split)} split; expected layout: {layout}"
            )

    problems = []
    if cfg_data.no_pairing_check:
        pairs = _pair_in_order(roles, problems)
    else:
        pairs = _pair_by_key(roles, key_fn, problems)
    _report(problems, cfg_data, "unpaired files")
    if cfg_data.max_dataset_size:
        pairs = pairs[: cfg_data.max_dataset_size]

    problems = []
    samples = _check_files(cfg_data, pairs, problems)
    _report(problems, cfg_data, "unusable files")
    if not samples:
        where = cfg_data.dataroot or roles[0].folder
        raise DataError(f"no usable samples in the {split_folder(split)} split of {where}")
    return samples
