"""Awkward image files the tests write themselves (shared by the decoder and the reliability tests)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size: the guard must refuse it before decoding."""
    small = png_bytes(Image.new("L", (1, 1)))
    ihdr_at = small.index(b"IHDR")
    body = struct.pack(">II", width, height) + small[ihdr_at + 12 : ihdr_at + 17]
    chunk = b"IHDR" + body
    return small[:ihdr_at] + chunk + struct.pack(">I", zlib.crc32(chunk)) + small[ihdr_at + 21 :]


def rgba_png(size: tuple[int, int] = (64, 48)) -> bytes:
    """RGBA with a fully transparent half: the decoder must drop alpha, not composite on black."""
    img = Image.new("RGBA", size, (10, 200, 30, 255))
    img.paste((10, 200, 30, 0), (0, 0, size[0] // 2, size[1]))
    return png_bytes(img)


def palette_png(size: tuple[int, int] = (64, 48)) -> bytes:
    img = Image.new("P", size)
    img.putpalette([255, 0, 0] * 256)
    return png_bytes(img)


def gray16_png(size: tuple[int, int] = (64, 48)) -> bytes:
    """16-bit grayscale (mode I;16): a full-range ramp, so a wrong 8-bit conversion shows."""
    ramp = np.linspace(0, 65535, size[0] * size[1]).astype(np.uint16).reshape(size[1], size[0])
    return png_bytes(Image.fromarray(ramp))
