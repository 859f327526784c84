"""Decode, orient, convert and resize images: the one place the seed's resize rule lives.

Preparation, training and scoring all call :func:`load_resized`, so a raw camera frame and its
prepared copy go through exactly the same arithmetic. The rule is the 2nd-place solution's (it used
Pavel Pleskov's 512-px dataset, made with PIL's LANCZOS)::

    ratio = max(w / L, h / L)
    new_w = int((w / ratio) // 16 * 16)
    new_h = int((h / ratio) // 16 * 16)

applied after the EXIF orientation and the conversion to RGB. It is kept bit-for-bit, float
arithmetic included, because the solution's models were trained on images made this way.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

#: PIL's own decompression-bomb threshold (about 89.5 MP); camera-trap frames are 3-20 MP.
#: The solution's long side: what ``prepare.py`` writes, and what scoring decodes raw frames to.
PREPARE_LONG_SIDE: int = 512
DEFAULT_MAX_PIXELS: int = int(Image.MAX_IMAGE_PIXELS or 89_478_485)

# A truncated JPEG must be an error, never a silently grey-padded image.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageDecodeError(ValueError):
    """An image could not be turned into an RGB array; the message says why."""


def resize_dims(width: int, height: int, long_side: int) -> tuple[int, int]:
    """Output size of the seed's rule: long side ``long_side``, both sides floored to a multiple of 16.

    Small images are scaled up, as in the seed. Raises :class:`ImageDecodeError` when a side would
    round down to zero (an extremely thin image), since no model can take a 0-px input.
    """
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"invalid image size {width}x{height}")
    if long_side < 16:
        raise ValueError(f"long_side must be at least 16, got {long_side}")
    ratio = max(width / long_side, height / long_side)
    new_w = int((width / ratio) // 16 * 16)
    new_h = int((height / ratio) // 16 * 16)
    if new_w == 0 or new_h == 0:
        raise ImageDecodeError(
            f"image of {width}x{height} has an aspect ratio too extreme for long side {long_side} "
            f"(a side rounds down to 0 px)"
        )
    return new_w, new_h


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    16- and 32-bit integer grayscale (``I;16``, ``I``) is scaled from 0..65535 to 0..255; a plain
    ``convert`` would clip everything above 255 to white. Alpha is dropped (camera frames are opaque).
    """
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        arr = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "F":
        arr = np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def decode_image(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode encoded image bytes to an upright RGB ``PIL.Image``.

    Raises :class:`ImageDecodeError` with a reason a user can act on: empty file, not an image,
    truncated, too many pixels for the decompression-bomb guard.
    """
    if len(data) == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageDecodeError(
                    f"image of {w}x{h} = {w * h} pixels exceeds the decompression-bomb limit of {max_pixels}"
                )
            img.load()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"decompression-bomb guard: {e}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"not a recognised image format ({len(data)} bytes)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"corrupt or truncated image: {e}") from None
    with contextlib.suppress(Exception):  # a malformed EXIF block must not cost the frame: keep it unrotated
        img = ImageOps.exif_transpose(img)
    return _to_rgb(img)


def resize_long_side(img: Image.Image, long_side: int) -> Image.Image:
    """Resize with the seed's rule and PIL LANCZOS (no-op when the size already matches)."""
    size = resize_dims(*img.size, long_side)
    if size == img.size:
        return img
    return img.resize(size, resample=Image.Resampling.LANCZOS)


def load_resized(
    data: bytes, long_side: int, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode, orient, convert to RGB and resize; returns the image and the upright original size."""
    img = decode_image(data, max_pixels=max_pixels)
    return resize_long_side(img, long_side), img.size


def encode_jpeg(img: Image.Image, quality: int = 95) -> bytes:
    """JPEG bytes; deterministic for a given image and quality (no timestamps, fixed subsampling)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling="4:2:0", optimize=False)
    return buf.getvalue()
