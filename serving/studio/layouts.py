"""What the studio accepts: layouts (label PNGs) and style photos, checked against the model's labels.json."""

import dataclasses
import io
import json
import math

import numpy as np
from PIL import Image, ImageOps

MAX_PIXELS = 4096 * 4096  # largest layout or style photo (height x width), as the model server's default
INT64 = (-2**63, 2**63 - 1)


class InputError(ValueError):
    """An upload or form field the model cannot take; the message says what is wrong and what is expected."""


@dataclasses.dataclass(frozen=True)
class ModelRules:
    """The parts of `assets.extra/labels.json` (the export contract) that the studio needs."""

    model_name: str
    class_names: tuple
    palette: np.ndarray  # uint8 [label_nc, 3]
    unknown_label: int | None
    use_vae: bool
    use_instance: bool
    z_dim: int
    image_size: tuple  # (H, W)
    size_multiple: int
    aspect_ratio: float

    @classmethod
    def from_labels(cls, labels: dict):
        try:
            rules = cls(model_name=str(labels["model_name"]), class_names=tuple(map(str, labels["class_names"])),
                        palette=np.asarray(labels["palette"], np.int64), unknown_label=labels["unknown_label"],
                        use_vae=bool(labels["use_vae"]), use_instance=bool(labels["use_instance"]),
                        z_dim=int(labels["z_dim"]), image_size=tuple(int(s) for s in labels["image_size"]),
                        size_multiple=int(labels["size_multiple"]), aspect_ratio=float(labels["aspect_ratio"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"labels.json lacks a valid field {e} (see the export contract)") from None
        n = int(labels.get("label_nc", len(rules.class_names)))
        if not (1 <= n <= 255 and len(rules.class_names) == n and rules.palette.shape == (n, 3)
                and rules.palette.min() >= 0 and rules.palette.max() <= 255):
            raise ValueError(f"labels.json must have label_nc (1..255) class names and RGB palette colours; got "
                             f"label_nc {n}, {len(rules.class_names)} names, palette shape {rules.palette.shape}")
        if rules.unknown_label not in (None, 255):
            raise ValueError(f"labels.json: unknown_label must be null or 255, got {rules.unknown_label!r}")
        return dataclasses.replace(rules, palette=rules.palette.astype(np.uint8))

    @property
    def label_nc(self):
        return len(self.class_names)

    def page_config(self) -> dict:
        """What the page needs to draw the palette and the canvas."""
        return {"model_name": self.model_name, "class_names": list(self.class_names),
                "palette": self.palette.tolist(), "label_nc": self.label_nc, "unknown_label": self.unknown_label,
                "use_vae": self.use_vae, "use_instance": self.use_instance, "image_size": list(self.image_size),
                "size_multiple": self.size_multiple, "aspect_ratio": self.aspect_ratio}

    def check_size(self, height, width, what):
        """The model server's rule: `image_size` for VAE models, else multiples of `size_multiple` at the
        trained aspect ratio (SPADE's generator: height = round(width / aspect_ratio) in blocks)."""
        h, w = self.image_size
        if height * width > MAX_PIXELS:
            raise InputError(f"the {what} is {width} x {height} pixels (width x height); the studio takes at most "
                             f"{MAX_PIXELS} pixels, e.g. {w} x {h}")
        if self.use_vae:
            if (height, width) != (h, w):
                raise InputError(f"the {what} is {width} x {height} pixels (width x height), but this model only "
                                 f"takes {w} x {h} (a VAE model: image_size in labels.json)")
            return
        m = self.size_multiple
        if height < m or width < m or height % m or width % m:
            raise InputError(f"the {what} is {width} x {height} pixels (width x height), but this model takes "
                             f"widths and heights that are multiples of {m}, e.g. {w} x {h}")
        want = m * round(width // m / self.aspect_ratio)
        if height != want:
            raise InputError(f"the {what} is {width} x {height} pixels (width x height), but this model makes "
                             f"images of width / height = {self.aspect_ratio:g}: for width {width} the height "
                             f"must be {want}, e.g. {w} x {h}")

    def check_classes(self, labels, what):
        bad = labels >= self.label_nc
        if self.unknown_label is not None:
            bad &= labels != self.unknown_label
        if bad.any():
            y, x = (int(i) for i in np.argwhere(bad)[0])
            allowed = f"0..{self.label_nc - 1}" + (" and 255 (unknown)" if self.unknown_label is not None else "")
            raise InputError(f"the {what} holds class index {int(labels[y, x])} at (x={x}, y={y}), but this model "
                             f"has {self.label_nc} classes: indices {allowed}")


def _open(data, what):
    try:
        image = Image.open(io.BytesIO(data))
    except (OSError, Image.UnidentifiedImageError, Image.DecompressionBombError):
        raise InputError(f"the {what} is not an image file that can be read (expected a PNG)") from None
    return image


def _load(image, what):
    try:
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"the {what} cannot be decoded: {e}") from None


def read_layout(data: bytes, rules: ModelRules, what="layout") -> np.ndarray:
    """A label PNG -> class indices uint8 [H, W].

    Single-channel PNGs (L, P, I) hold class indices (a palette PNG's indices, as the page sends);
    RGB(A) PNGs are colour-coded with the model's palette (an exact match per pixel; a colour the
    palette repeats maps to its lowest class index).
    """
    image = _open(data, what)
    if image.format != "PNG":
        raise InputError(f"the {what} must be a PNG file (lossless), got a {image.format} file")
    rules.check_size(image.height, image.width, what)
    _load(image, what)
    if image.mode in ("L", "P") or image.mode.startswith("I"):
        indices = np.asarray(image).astype(np.int64)
        if indices.min() < 0 or indices.max() > 255:
            raise InputError(f"the {what} holds values {indices.min()}..{indices.max()}; class indices are 0..255")
    elif image.mode in ("RGB", "RGBA"):
        rgb = np.asarray(image)
        if image.mode == "RGBA":
            if (rgb[..., 3] != 255).any():
                raise InputError(f"the {what} has transparent pixels; a colour-coded layout must be opaque")
            rgb = rgb[..., :3]
        indices = _colours_to_classes(rgb, rules.palette, what)
    else:
        raise InputError(f"the {what} has image mode {image.mode}; expected class indices (a single-channel PNG: "
                         "L, P or I) or the model's palette colours (RGB)")
    indices = indices.astype(np.uint8)
    rules.check_classes(indices, what)
    return indices


def _colours_to_classes(rgb, palette, what):
    pack = lambda c: (c[..., 0].astype(np.int64) << 16) | (c[..., 1].astype(np.int64) << 8) | c[..., 2]  # noqa: E731
    known, first = np.unique(pack(palette), return_index=True)  # first: lowest class index of each colour
    pixels = pack(rgb)
    where = np.minimum(np.searchsorted(known, pixels), len(known) - 1)
    found = known[where] == pixels
    if not found.all():
        y, x = (int(i) for i in np.argwhere(~found)[0])
        colours = len(np.unique(pixels[~found]))
        raise InputError(f"the {what} has {int((~found).sum())} pixels in {colours} colours that are not in the "
                         f"model's palette, e.g. {tuple(int(c) for c in rgb[y, x])} at (x={x}, y={y}); use the "
                         "palette's colours, or class indices in a single-channel PNG")
    return first[where]


def read_style_photo(data: bytes, size) -> np.ndarray:
    """A photo (any format Pillow reads) -> uint8 RGB [H, W, 3], scaled and centre-cropped to `size` (H, W)."""
    image = _open(data, "style photo")
    if image.width * image.height > MAX_PIXELS:
        raise InputError(f"the style photo has {image.width} x {image.height} pixels; the studio takes at most "
                         f"{MAX_PIXELS} pixels")
    _load(image, "style photo")
    image = ImageOps.exif_transpose(image).convert("RGB")
    return np.asarray(ImageOps.fit(image, (size[1], size[0]), Image.Resampling.LANCZOS))


def parse_seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        raise InputError(f"the seed must be a whole number, got {text!r}") from None
    if not INT64[0] <= seed <= INT64[1]:
        raise InputError(f"the seed must be in {INT64[0]}..{INT64[1]}, got {seed}")
    return seed


def parse_z(text: str, z_dim: int) -> np.ndarray:
    """A JSON list of `z_dim` finite numbers (a style code from /api/style) -> float32 [z_dim]."""
    try:
        z = json.loads(text)
    except ValueError:
        raise InputError("the style code z must be a JSON list of numbers") from None
    if not (isinstance(z, list) and len(z) == z_dim
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in z)):
        raise InputError(f"the style code z must be a list of {z_dim} finite numbers")
    return np.asarray(z, np.float32)


def png_bytes(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()
