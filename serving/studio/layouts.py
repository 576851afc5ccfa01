"""What the studio accepts: layouts (label PNGs) and style photos, checked against the model's labels.json
with the export contract's rules (`spade_tf_client.contract`)."""

import io
import json
import math

import numpy as np
from PIL import Image, ImageOps
from spade_tf_client.contract import ContractError, LabelsJson, read_label_png

MAX_PIXELS = 4096 * 4096  # largest layout or style photo (height x width), as the model server's default
INT64 = (-2**63, 2**63 - 1)


class InputError(ValueError):
    """An upload or form field the model cannot take; the message says what is wrong and what is expected."""


def check_pixels(height, width, what, labels: LabelsJson):
    h, w = labels.image_size
    if height * width > MAX_PIXELS:
        raise InputError(f"the {what} is {height} x {width} (height x width); the studio takes at most "
                         f"{MAX_PIXELS} pixels, e.g. {h} x {w}")


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


def read_layout(data: bytes, labels: LabelsJson, what="layout") -> np.ndarray:
    """A label PNG -> class indices uint8 [H, W], by the export contract's reader and rules.

    Single-channel PNGs (L, P, I) hold class indices (a palette PNG's indices, as the page sends);
    RGB(A) PNGs are colour-coded with the model's palette. The size is checked from the header,
    before the pixels are decoded.
    """
    image = _open(data, what)
    if image.format != "PNG":
        raise InputError(f"the {what} must be a PNG file (lossless), got a {image.format} file")
    check_pixels(image.height, image.width, what, labels)
    try:
        labels.check_size(image.height, image.width, f"the {what}")
        _load(image, what)
        indices = read_label_png(image, labels.palette_array, what=f"the {what}")
        labels.check_labels(indices, f"the {what}")
    except ContractError as e:
        raise InputError(str(e)) from None
    return indices


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
