"""Image validation and decoding: plain Pillow + NumPy, no Spark, no Dagster.

`inspect_image` decides whether a file may reach the model (and says precisely why not);
`decode_rgb` turns the bytes of an accepted image into the model's input array.
Policy (see docs/failure-modes.md): JPEG, PNG and WEBP are accepted when the content matches
the file extension; greyscale, palette, CMYK and alpha images are converted to RGB (alpha is
composited on white, the Fruits-360 background); any size is accepted and resized, but images
whose declared size exceeds MAX_PIXELS are rejected from the header alone, before decoding.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath

import numpy as np
from PIL import Image, ImageOps

# Content format expected for each accepted file extension.
FORMAT_BY_EXTENSION = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
# Larger declared sizes are decompression bombs for our purpose (a 100x100 fruit photo is 10k px).
MAX_PIXELS = 25_000_000
# Modes converted to RGB; anything else (16-bit, float, ...) is rejected.
CONVERTIBLE_MODES = {"RGB", "L", "LA", "P", "PA", "RGBA", "RGBa", "CMYK", "YCbCr", "1", "La"}

STATUS_OK = "ok"
STATUS_REJECTED = "rejected"


@dataclass(frozen=True)
class ImageRecord:
    """What the catalogue (`raw_images`) records about one file."""

    size_bytes: int
    sha256: str
    format: str | None
    width: int | None
    height: int | None
    mode: str | None
    status: str
    reason: str | None

    def as_dict(self) -> dict:
        return asdict(self)


SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG"}


def _describe_non_image(data: bytes) -> str:
    for signature, fmt in SIGNATURES.items():
        if data.startswith(signature):
            return f"corrupt: {fmt} header is truncated or damaged"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "corrupt: WEBP header is truncated or damaged"
    head = data[:512].lstrip()
    if head[:1] == b"<":
        return "not_an_image: HTML/XML text content"
    try:
        head.decode("utf-8")
        return "not_an_image: text content"
    except UnicodeDecodeError:
        return "not_an_image: content is not a JPEG, PNG or WEBP image"


def inspect_image(name: str, data: bytes) -> ImageRecord:
    """Validate one file (fully decoding it) and describe it. Never raises for bad input."""
    digest = hashlib.sha256(data).hexdigest()

    def rejected(reason: str, fmt=None, width=None, height=None, mode=None) -> ImageRecord:
        return ImageRecord(len(data), digest, fmt, width, height, mode, STATUS_REJECTED, reason)

    extension = PurePosixPath(name).suffix.lower()
    if extension not in FORMAT_BY_EXTENSION:
        return rejected(f"unsupported_file: {PurePosixPath(name).name!r} is not a .jpg/.jpeg/.png/.webp file")
    if not data:
        return rejected("empty_file: 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data), formats=list(set(FORMAT_BY_EXTENSION.values())))
    except Image.DecompressionBombError as error:  # Pillow's own guard, far above MAX_PIXELS
        return rejected(f"too_large: {error}")
    except Exception:  # Pillow raises many types for garbage; all mean "not an image"
        return rejected(_describe_non_image(data))
    fmt, (width, height), mode = image.format, image.size, image.mode
    if fmt != FORMAT_BY_EXTENSION[extension]:
        return rejected(f"format_mismatch: {fmt} content in a {extension} file", fmt, width, height, mode)
    if width <= 0 or height <= 0:
        return rejected(f"invalid_size: {width}x{height}", fmt, width, height, mode)
    if width * height > MAX_PIXELS:
        return rejected(
            f"too_large: declared {width}x{height} pixels exceeds {MAX_PIXELS:,} (decompression bomb guard)",
            fmt,
            width,
            height,
            mode,
        )
    if mode not in CONVERTIBLE_MODES:
        return rejected(f"unsupported_mode: {mode}", fmt, width, height, mode)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
    except Exception as error:  # truncated or damaged data
        return rejected(f"corrupt: {type(error).__name__}: {error}"[:300], fmt, width, height, mode)
    return ImageRecord(len(data), digest, fmt, width, height, mode, STATUS_OK, None)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any accepted mode to RGB; transparent pixels become white."""
    if image.mode == "RGB":
        return image
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _model_input(image: Image.Image, size: int) -> np.ndarray:
    rgb = to_rgb(image)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def decode_rgb(data: bytes, size: int) -> np.ndarray:
    """Decode accepted image bytes to a (size, size, 3) uint8 RGB array (bilinear resize)."""
    with Image.open(io.BytesIO(data)) as image:
        return _model_input(image, size)


def decode_photo(data: bytes, size: int) -> np.ndarray:
    """`decode_rgb` for a photo taken by a phone: turned upright first, as its EXIF orientation says."""
    with Image.open(io.BytesIO(data)) as image:
        return _model_input(ImageOps.exif_transpose(image), size)


def decode_batch(blobs: list[bytes], size: int) -> np.ndarray:
    """Decode a batch of accepted images into one (n, size, size, 3) uint8 array."""
    batch = np.empty((len(blobs), size, size, 3), dtype=np.uint8)
    for index, data in enumerate(blobs):
        batch[index] = decode_rgb(data, size)
    return batch
