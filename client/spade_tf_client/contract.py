"""The export contract (docs/EXPORT_CONTRACT.md): what an exported SPADE model takes and gives.

Each rule is written here once, with NumPy and Pillow only (never TensorFlow), and imported by the
exporter, the embedded server, the client, the painting page and `spade_tf.generate`:

- `LabelsJson`: the fields of `<version>/assets.extra/labels.json`, written by the exporter;
- the size rule (`LabelsJson.check_size`) and the label-value rule (`allowed_labels`,
  `invalid_labels`, `LabelsJson.check_labels`);
- colour <-> class (`colours_to_classes`, `classes_to_colours`) and reading a label PNG
  (`read_label_png`, `read_instance_png`);
- version folders (`version_folders`, `newest_version`) and the warm-up record limit.

Messages follow the embedded server's (TF Serving's) wording; `what` names the input ('Input
"label_map"', "the layout", a file name) and `where` the model ('model "spade" version 3', "this model").
"""

import dataclasses
import io
import json
import math
import pathlib

import numpy as np
from PIL import Image

ASSETS_EXTRA = "assets.extra"  # TF Serving's folder for files beside the SavedModel
LABELS_FILE = "labels.json"  # in <version>/assets.extra/
WARMUP_FILE = "tf_serving_warmup_requests"  # in <version>/assets.extra/
MAX_WARMUP_RECORDS = 1000  # TF Serving refuses to load a model with more (saved_model_warmup_util.cc)
UNKNOWN_LABEL = 255  # the "don't care" value of datasets that have one
MAX_VERSION = 2**63 - 1  # version folder names are int64 numbers
Z_DIM = 256  # the VAE encoder's style code
SIGNATURES = ("serving_default", "with_seed", "with_z", "encode_style")
ID_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L")  # Pillow modes of single-channel id maps


class ContractError(ValueError):
    """Something breaks the export contract; the message says what and what is expected."""


# --- version folders --------------------------------------------------------------------------

def is_version_name(name: str) -> bool:
    """TF Serving's rule: a folder whose name is an int64 number (ASCII digits) is a version."""
    return name.isascii() and name.isdigit() and int(name) <= MAX_VERSION


def version_folders(base_path) -> list:
    """The version numbers of the numbered folders in a model base path, ascending ([] if none)."""
    base_path = pathlib.Path(base_path)
    if not base_path.is_dir():
        return []
    return sorted(int(p.name) for p in base_path.iterdir() if is_version_name(p.name) and p.is_dir())


def newest_version(base_path):
    """The highest version number in `base_path`, or None."""
    return max(version_folders(base_path), default=None)


# --- labels.json ------------------------------------------------------------------------------

def min_size(size_multiple: int, resnet_kernel_size=None) -> int:
    """The smallest height and width a generator takes.

    SPADE: one `size_multiple` block. pix2pixHD (`resnet_kernel_size` k): its bottleneck of
    size / size_multiple pixels is reflection-padded by (k - 1) // 2, which needs more pixels than
    the padding, so size_multiple x ((k - 1) // 2 + 1).
    """
    if resnet_kernel_size is None:
        return size_multiple
    return size_multiple * ((resnet_kernel_size - 1) // 2 + 1)


def allowed_labels(label_nc: int, contain_dontcare_label: bool) -> str:
    """The label values a model takes, in words (the label-value rule)."""
    if contain_dontcare_label:
        return f"class indices 0..{label_nc - 1} and {label_nc} or {UNKNOWN_LABEL} for unknown pixels"
    return (f"class indices 0..{label_nc - 1} (this model has no don't-care label, so {UNKNOWN_LABEL} is "
            "not allowed either)")


def invalid_labels(labels, label_nc: int, contain_dontcare_label: bool) -> np.ndarray:
    """Boolean mask of the values outside the label set: 0..label_nc-1, plus with a don't-care label the
    unknown index label_nc and UNKNOWN_LABEL (which the model maps to label_nc)."""
    labels = np.asarray(labels)
    bad = (labels < 0) | (labels >= label_nc)
    if contain_dontcare_label:
        bad &= (labels != label_nc) & (labels != UNKNOWN_LABEL)
    return bad


@dataclasses.dataclass(frozen=True)
class LabelsJson:
    """`assets.extra/labels.json` of an export: label set, palette and the sizes the model takes."""

    model_name: str
    class_names: tuple  # label_nc names, index i = class i
    palette: tuple  # label_nc (R, G, B) colours, 0..255
    label_nc: int
    contain_dontcare_label: bool  # 255 (and label_nc) mean "unknown"
    use_instance: bool  # the signatures take instance_map
    use_vae: bool  # with_z and encode_style exist; the size is fixed to image_size
    z_dim: int
    image_size: tuple  # (height, width) the model was trained at
    size_multiple: int  # heights and widths are multiples of it
    min_size: int  # smallest height and width
    aspect_ratio: float  # width / height of the trained size
    signatures: tuple = ()

    REQUIRED = ("model_name", "class_names", "palette", "label_nc", "use_instance", "use_vae", "z_dim",
                "image_size", "size_multiple", "aspect_ratio")

    def __post_init__(self):
        n = self.label_nc
        problems = []
        if not 1 <= n <= 255:
            problems.append(f"label_nc must be in 1..255, got {n}")
        if len(self.class_names) != n:
            problems.append(f"{len(self.class_names)} class_names for label_nc {n}")
        if len(self.palette) != n or any(len(c) != 3 or min(c) < 0 or max(c) > 255 for c in self.palette):
            problems.append(f"palette must be label_nc ({n}) RGB colours in 0..255")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            problems.append(f"image_size must be [height, width], got {list(self.image_size)}")
        if self.size_multiple < 1 or self.min_size < self.size_multiple or self.min_size % self.size_multiple:
            problems.append(f"size_multiple {self.size_multiple} and min_size {self.min_size}: min_size must be "
                            "a positive multiple of size_multiple")
        if not (math.isfinite(self.aspect_ratio) and self.aspect_ratio > 0):
            problems.append(f"aspect_ratio must be a positive number, got {self.aspect_ratio}")
        if problems:
            raise ContractError(f"labels.json: {'; '.join(problems)} (see the export contract)")

    @property
    def unknown_label(self):
        return UNKNOWN_LABEL if self.contain_dontcare_label else None

    @property
    def palette_array(self) -> np.ndarray:
        return np.asarray(self.palette, np.uint8).reshape(-1, 3)

    @classmethod
    def from_dict(cls, values: dict) -> "LabelsJson":
        """Parse labels.json's dict; exports from before `min_size` and `contain_dontcare_label` still load."""
        if not isinstance(values, dict):
            raise ContractError(f"labels.json must hold a JSON object, got {type(values).__name__}")
        missing = [key for key in cls.REQUIRED if key not in values]
        if missing:
            raise ContractError(f"labels.json lacks {', '.join(missing)} (see the export contract)")
        try:
            size_multiple = int(values["size_multiple"])
            return cls(model_name=str(values["model_name"]),
                       class_names=tuple(str(name) for name in values["class_names"]),
                       palette=tuple(tuple(int(c) for c in colour) for colour in values["palette"]),
                       label_nc=int(values["label_nc"]),
                       contain_dontcare_label=bool(values.get("contain_dontcare_label",
                                                              values.get("unknown_label") is not None)),
                       use_instance=bool(values["use_instance"]), use_vae=bool(values["use_vae"]),
                       z_dim=int(values["z_dim"]), image_size=tuple(int(s) for s in values["image_size"]),
                       size_multiple=size_multiple, min_size=int(values.get("min_size", size_multiple)),
                       aspect_ratio=float(values["aspect_ratio"]),
                       signatures=tuple(str(s) for s in values.get("signatures", ())))
        except (TypeError, ValueError) as e:
            if isinstance(e, ContractError):
                raise
            raise ContractError(f"labels.json has a field of the wrong type: {e} (see the export contract)") from None

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values.update(class_names=list(self.class_names), palette=[list(c) for c in self.palette],
                      image_size=list(self.image_size), signatures=list(self.signatures),
                      unknown_label=self.unknown_label)
        return values

    @classmethod
    def read(cls, path) -> "LabelsJson":
        """From labels.json, a version folder, or a model base path (its newest version)."""
        return cls.from_dict(json.loads(labels_path(path).read_text()))

    def write(self, path) -> None:
        pathlib.Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    # --- the size rule ---
    def check_size(self, height: int, width: int, what: str, where: str = "this model") -> None:
        """ContractError unless the model can make an image of height x width."""
        h, w = self.image_size
        said = f"{what} is {height} x {width} (height x width) but {where}"
        if self.use_vae:
            if (height, width) != (h, w):
                raise ContractError(f"{said} only takes {h} x {w} (a VAE model: image_size in labels.json)")
            return
        m = self.size_multiple
        if height % m or width % m:
            raise ContractError(f"{said} takes heights and widths that are multiples of {m} (size_multiple in "
                                f"labels.json), e.g. {h} x {w}")
        if height < self.min_size or width < self.min_size:
            raise ContractError(f"{said} takes heights and widths of at least {self.min_size} (min_size in "
                                f"labels.json), e.g. {h} x {w}")
        want = self.height_for(width)
        if height != want:
            raise ContractError(f"{said} generates width / height = {self.aspect_ratio:g} (aspect_ratio in "
                                f"labels.json): for width {width} the height must be {want}, e.g. {h} x {w}")

    def height_for(self, width: int) -> int:
        """The height the generator makes for `width`: round(width blocks / aspect ratio) blocks."""
        m = self.size_multiple
        return m * round(width // m / self.aspect_ratio)

    # --- the label-value rule ---
    def check_labels(self, labels, what: str, where: str = "this model") -> None:
        """ContractError if `labels` holds a value outside the label set, naming the first one."""
        labels = np.asarray(labels)
        bad = invalid_labels(labels, self.label_nc, self.contain_dontcare_label)
        if bad.any():
            at = [int(i) for i in np.argwhere(bad)[0]]
            raise ContractError(f"{what} holds {labels[tuple(at)]} at {at}, but {where} takes "
                                f"{allowed_labels(self.label_nc, self.contain_dontcare_label)} "
                                "(label_nc in assets.extra/labels.json)")


def labels_path(path) -> pathlib.Path:
    """labels.json itself, or the one of a version folder, or of a model base path's newest version."""
    path = pathlib.Path(path)
    if not path.is_dir():
        return path
    if (path / ASSETS_EXTRA / LABELS_FILE).exists():
        return path / ASSETS_EXTRA / LABELS_FILE
    version = newest_version(path)
    if version is None:
        raise ContractError(f"{path} has no {ASSETS_EXTRA}/{LABELS_FILE} and no numbered version folders")
    return path / str(version) / ASSETS_EXTRA / LABELS_FILE


# --- colour <-> class ---------------------------------------------------------------------------

def _pack(rgb) -> np.ndarray:
    rgb = np.asarray(rgb).astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def as_palette(colours) -> np.ndarray:
    colours = np.asarray(colours)
    if colours.ndim != 2 or colours.shape[1] != 3 or not 1 <= len(colours) <= 256:
        raise ContractError(f"palette must be [num_classes, 3] RGB with 1..256 colours, got shape {colours.shape}")
    if colours.min() < 0 or colours.max() > 255:
        raise ContractError("palette colours must be in 0..255")
    return colours.astype(np.uint8)


def classes_to_colours(labels, palette, unknown_color=(0, 0, 0)) -> np.ndarray:
    """Class indices [...] -> uint8 RGB [..., 3]; indices past the palette (unknown, 255) get `unknown_color`."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ContractError(f"label map must hold integer class indices, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ContractError(f"label map has negative values, e.g. {int(labels.min())}")
    colours = as_palette(palette)
    table = np.concatenate([colours, np.asarray(unknown_color, np.uint8).reshape(1, 3)])
    return table[np.minimum(labels.astype(np.int64), len(colours))]


def colours_to_classes(rgb, palette, unknown_label=None, what="the colour label map") -> np.ndarray:
    """uint8 RGB [..., 3] -> uint8 class indices [...], by exact colour match.

    A colour the palette repeats maps to its lowest index. A colour not in the palette is a
    ContractError naming the commonest ones, unless `unknown_label` is given: those pixels get it.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim < 1 or rgb.shape[-1] != 3:
        raise ContractError(f"colour label image must be uint8 RGB [..., 3], got {rgb.dtype} {rgb.shape}")
    if unknown_label is not None and not (isinstance(unknown_label, (int, np.integer)) and 0 <= unknown_label <= 255):
        raise ContractError(f"unknown_label must be None or an integer in 0..255, got {unknown_label!r}")
    keys = _pack(as_palette(palette))
    known, first = np.unique(keys, return_index=True)  # first: the lowest index of each colour
    pixels = _pack(rgb)
    position = np.minimum(np.searchsorted(known, pixels), len(known) - 1)
    found = known[position] == pixels
    labels = first[position]
    if not found.all():
        if unknown_label is None:
            colours, counts = np.unique(pixels[~found], return_counts=True)
            top = np.argsort(-counts, kind="stable")[:5]
            listed = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255}): {n} px"
                               for c, n in zip(colours[top], counts[top]))
            at = ""
            if rgb.ndim == 3:
                y, x = (int(i) for i in np.argwhere(~found)[0])
                at = f", the first at (x={x}, y={y})"
            raise ContractError(f"{what} has {int(counts.sum())} pixels in {len(colours)} colours that are not in "
                                f"the model's palette of {len(keys)} classes: {listed}{at}; use the palette's "
                                "colours (labels.json), or class indices in a single-channel PNG")
        labels = np.where(found, labels, unknown_label)
    return labels.astype(np.uint8)


# --- label PNGs --------------------------------------------------------------------------------

def open_image(source, what=None) -> Image.Image:
    """A decoded Pillow image from a path or bytes; ContractError naming `what` (default: the path)."""
    what = what or str(source)
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        image.load()
        return image
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ContractError(f"{what} is not a readable image: {e}") from None


def read_label_png(source, palette=None, *, unknown_label=None, what=None) -> np.ndarray:
    """A label PNG (path, bytes or a Pillow image) -> uint8 class indices [H, W].

    Single-channel images (L, P, I) hold class indices (a palette PNG's indices); RGB(A) images are
    colour-coded with `palette` (labels.json's), see `colours_to_classes`. Values are not checked
    against a label set here: that is `LabelsJson.check_labels`.
    """
    image = source if isinstance(source, Image.Image) else open_image(source, what)
    what = what or str(source)
    if image.mode in ID_MODES:
        indices = np.asarray(image).astype(np.int64)
        if indices.size and (indices.min() < 0 or indices.max() > 255):
            raise ContractError(f"{what} holds values {indices.min()}..{indices.max()}; class indices are 0..255")
        return indices.astype(np.uint8)
    if image.mode in ("RGB", "RGBA"):
        if palette is None:
            raise ContractError(f"{what} is a colour (RGB) label map: give the model's labels.json so that its "
                                "colours can be mapped to classes, or use a single-channel index PNG")
        rgb = np.asarray(image)
        if image.mode == "RGBA":
            if (rgb[..., 3] != 255).any():
                raise ContractError(f"{what} has transparent pixels; a colour-coded layout must be opaque")
            rgb = rgb[..., :3]
        return colours_to_classes(rgb, palette, unknown_label, what)
    raise ContractError(f"{what}: it is a {image.mode}-mode image; expected class indices (a single-channel PNG: "
                        "L, P or I) or the model's palette colours (RGB)")


def read_instance_png(source, what=None) -> np.ndarray:
    """An instance PNG (single channel, one id per object) -> int32 [H, W]."""
    image = source if isinstance(source, Image.Image) else open_image(source, what)
    if image.mode not in ID_MODES:
        raise ContractError(f"{what or source}: it is a {image.mode}-mode image; expected a single-channel PNG "
                            "(L, P or I) of instance ids")
    return np.asarray(image).astype(np.int32)
