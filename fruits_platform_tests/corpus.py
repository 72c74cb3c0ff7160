"""Generates the bad-file corpus (no binary blobs in the repo): each case with its expected outcome."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _image(mode: str, size=(100, 100), color=None) -> Image.Image:
    colors = {"RGB": (200, 30, 40), "L": 128, "P": 3, "RGBA": (10, 200, 30, 128), "CMYK": (0, 200, 200, 0)}
    image = Image.new(mode, size, color if color is not None else colors[mode])
    if mode == "P":
        image.putpalette([i % 256 for i in range(768)])
    return image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def valid_jpeg(size=(100, 100), seed: int = 0) -> bytes:
    """A JPEG of random texture (so that its data, not only its header, has some length)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels, "RGB"), "JPEG", quality=90)


def bomb_jpeg(width: int = 60000, height: int = 60000) -> bytes:
    """A small JPEG whose header declares a huge size (the SOF0 segment is patched)."""
    data = bytearray(valid_jpeg((16, 16)))
    marker = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, marker + 5, height, width)
    return bytes(data)


def bomb_png(width: int = 50000, height: int = 50000) -> bytes:
    """A small PNG whose IHDR declares a huge size (CRC recomputed, so only the size is wrong)."""
    data = bytearray(encode(_image("RGB", (1, 1)), "PNG"))
    struct.pack_into(">II", data, 16, width, height)  # 8-byte signature, length, b"IHDR", then the size
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def transparent_palette_png() -> bytes:
    """A palette image whose index 0 is transparent (composited on white when converted)."""
    image = _image("P", (100, 100), color=0)
    image.paste(5, (0, 0, 50, 100))
    return encode(image, "PNG", transparency=0)


# name -> (bytes, expected status, expected reason prefix or None).
# JPEG cannot carry alpha or a palette (Pillow refuses to write RGBA/P as JPEG), so RGBA and palette
# images come as PNG; an RGBA PNG *named* .jpg is a format mismatch like any other.
def bad_and_odd_files() -> dict[str, tuple[bytes, str, str | None]]:
    jpeg = valid_jpeg()
    return {
        "empty.jpg": (b"", "rejected", "empty_file"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "rejected", "corrupt: OSError"),
        "truncated_header.jpg": (jpeg[:40], "rejected", "corrupt: JPEG header"),
        "notes.jpg": (b"just some text, not a photo\n" * 4, "rejected", "not_an_image: text content"),
        "page.jpg": (b"<!DOCTYPE html><html><body>404</body></html>", "rejected", "not_an_image: HTML"),
        "png_inside.jpg": (encode(_image("RGB"), "PNG"), "rejected", "format_mismatch: PNG content in a .jpg"),
        "webp_inside.jpg": (encode(_image("RGB"), "WEBP"), "rejected", "format_mismatch: WEBP content in a .jpg"),
        "bomb.jpg": (bomb_jpeg(), "rejected", "too_large"),
        "bomb.png": (bomb_png(), "rejected", "too_large"),
        "rgba_inside.jpg": (encode(_image("RGBA"), "PNG"), "rejected", "format_mismatch: PNG content in a .jpg"),
        "readme.txt": (b"class notes\n", "rejected", "unsupported_file"),
        ".DS_Store": (b"\x00\x00\x00\x01Bud1" + b"\x00" * 32, "rejected", "unsupported_file"),
        "Thumbs.db": (b"\xd0\xcf\x11\xe0" + b"\x00" * 60, "rejected", "unsupported_file"),
        "grey.jpg": (encode(_image("L"), "JPEG"), "ok", None),
        "cmyk.jpg": (encode(_image("CMYK"), "JPEG"), "ok", None),
        "rgba.png": (encode(_image("RGBA"), "PNG"), "ok", None),
        "palette.png": (encode(_image("P"), "PNG"), "ok", None),
        "palette_transparent.png": (transparent_palette_png(), "ok", None),
        "rgb.webp": (encode(_image("RGB"), "WEBP"), "ok", None),
        "UPPER.JPG": (valid_jpeg(seed=1), "ok", None),
        "large_200x150.jpg": (valid_jpeg((200, 150)), "ok", None),
        "fine.jpg": (jpeg, "ok", None),
    }


def write_corpus(folder: Path) -> dict[str, tuple[str, str | None]]:
    """Write every case into `folder`; returns name -> (status, reason prefix)."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (data, status, reason) in bad_and_odd_files().items():
        (folder / name).write_bytes(data)
        expected[name] = (status, reason)
    return expected
