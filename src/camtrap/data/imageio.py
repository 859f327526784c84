"""Decode, orient, convert and resize images: the one place the seed's resize rule lives.

Preparation, training and scoring all call :func:`load_resized`, so a raw camera frame and its
prepared copy go through exactly the same arithmetic. The rule is the 2nd-place solution's (it used
Pavel Pleskov's 512-px dataset, made with PIL's LANCZOS)::

    ratio = max(w / L, h / L)
    new_w = int((w / ratio) // 16 * 16)
    new_h = int((h / ratio) // 16 * 16)

applied after the EXIF orientation and the conversion to RGB. It is kept bit-for-bit, float
arithmetic included, because the solution's models were trained on images made this way.

Two decode modes reach those output sizes (:data:`DECODE_MODES`). ``exact`` (the default) decodes every
pixel of the frame and LANCZOS-resizes it: the bytes above. ``fast`` lets libjpeg decode a JPEG at 1/2,
1/4 or 1/8 scale in the DCT domain (PIL's ``Image.draft``), at the smallest scale whose both sides are
still at least 1.5 times the output size (:data:`FAST_DECODE_MARGIN`), then applies the same LANCZOS
resize to the same output size. On real full-size frames that is about 2.5x less decode time, at a mean
absolute pixel difference under 1 (not zero: the DCT-domain downscale is another filter), so the mode is
recorded wherever pixels are made (prepared folder, ``model.pt``) and a mix is refused
(:mod:`camtrap.data.decoding`). Other formats decode the same in both.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from typing import Literal

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

#: PIL's own decompression-bomb threshold (about 89.5 MP); camera-trap frames are 3-20 MP.
#: The solution's long side: what ``prepare.py`` writes, and what scoring decodes raw frames to.
PREPARE_LONG_SIDE: int = 512
DEFAULT_MAX_PIXELS: int = int(Image.MAX_IMAGE_PIXELS or 89_478_485)

#: ``exact``: every pixel decoded, then LANCZOS (the seed's bytes); ``fast``: a JPEG decoded at a reduced
#: DCT scale first, then the same LANCZOS to the same sizes (see the module docstring).
DecodeMode = Literal["exact", "fast"]
DECODE_MODES: tuple[str, ...] = ("exact", "fast")
DEFAULT_DECODE: DecodeMode = "exact"
#: The mode's name wherever it is recorded: pinned settings, the prepared manifest's column, ``model.pt``.
DECODE_KEY = "decode"
#: The stated pixel gap of ``fast`` against ``exact``: the mean absolute difference in 8-bit levels over a
#: set of images (at 512 px, over each full-size frame too). Tests hold ``shared/data/real`` to it.
FAST_DECODE_MAX_MAD: float = 1.5
#: ``fast`` decodes at the smallest DCT scale still at least this many times the output size, so LANCZOS
#: does the last part of the reduction with its own antialiasing. Measured to 512 px (CPU time per image
#: against exact; MAD in 8-bit levels, worst image in brackets) on the 17 real full-size frames of
#: ``shared/data/real`` and on 61 generated demo frames (1024x768 to 2048x1536):
#:
#: ======  =====================  =====================
#: margin  real frames            demo frames
#: ======  =====================  =====================
#: 1       4.4x, MAD 2.40 (5.06)  3.9x, MAD 0.57 (1.51)
#: 1.5     2.5x, MAD 0.72 (1.38)  1.6x, MAD 0.11 (0.30)
#: 2       2.4x, MAD 0.60 (1.24)  1.3x, MAD 0.06 (0.30)
#: ======  =====================  =====================
#:
#: 1 (decode straight at the output size) breaks :data:`FAST_DECODE_MAX_MAD` on real frames; 1.5 keeps
#: within it and, unlike 2, also reduces 1920x1080 frames (to 1/2) and 12 MP ones to 1/4.
FAST_DECODE_MARGIN: float = 1.5
#: EXIF orientations that swap width and height (a 90 or 270 degree turn, mirrored or not).
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
#: EXIF orientations that ``exif_transpose`` acts on (1, absent or unknown: stored upright).
_TURNING_ORIENTATIONS = frozenset(range(2, 9))

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


def check_decode(decode: str) -> DecodeMode:
    """``decode`` if it names a mode, else ``ValueError`` listing the modes (a typo must not fall back)."""
    if decode not in DECODE_MODES:
        raise ValueError(f"decode mode must be one of {DECODE_MODES}, got {decode!r}")
    return decode  # type: ignore[return-value]


def decode_record(mode: DecodeMode) -> dict[str, str]:
    """A mode as pinned beside a job's saved results (prepared files, scored images): nothing for exact, so
    results saved before the modes existed (all exact) still resume, and ``{"decode": mode}`` otherwise."""
    return {} if check_decode(mode) == DEFAULT_DECODE else {DECODE_KEY: mode}


def _open(data: bytes, max_pixels: int | None) -> Image.Image:
    """Open without decoding pixels, refusing empty input and decompression bombs by the stored size."""
    if len(data) == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"decompression-bomb guard: {e}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"not a recognised image format ({len(data)} bytes)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"corrupt or truncated image: {e}") from None
    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageDecodeError(
            f"image of {w}x{h} = {w * h} pixels exceeds the decompression-bomb limit of {max_pixels}"
        )
    return img


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag; 1 (upright) when absent or unreadable, as the transpose then fails and is
    skipped too."""
    with contextlib.suppress(Exception):
        return int(img.getexif().get(0x0112, 1))
    return 1


def _upright_size(img: Image.Image) -> tuple[int, int]:
    """The stored size as :func:`ImageOps.exif_transpose` will turn it."""
    w, h = img.size
    return (h, w) if _orientation(img) in _SWAPPING_ORIENTATIONS else (w, h)


def _draft(img: Image.Image, upright_target: tuple[int, int]) -> None:
    """Ask libjpeg for the smallest DCT scale (1/2, 1/4, 1/8) whose both sides still cover
    :data:`FAST_DECODE_MARGIN` x the target.

    The request is in stored orientation (an EXIF-rotated frame is turned after decoding). PIL picks
    ``s = min(w // rw, h // rh)`` rounded down to 8, 4, 2 or 1 and decodes ``ceil(w / s) x ceil(h / s)``,
    so both sides stay >= the request and the LANCZOS step still only shrinks. A no-op for other formats.
    """
    tw, th = upright_target[0] * FAST_DECODE_MARGIN, upright_target[1] * FAST_DECODE_MARGIN
    stored = (th, tw) if _upright_size(img) != img.size else (tw, th)
    img.draft(img.mode, stored)


def _load_upright_rgb(img: Image.Image) -> Image.Image:
    """Decode the pixels (at the drafted scale, if any), apply the EXIF orientation, convert to RGB."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(f"decompression-bomb guard: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"corrupt or truncated image: {e}") from None
    # Only a turning orientation is handed to exif_transpose: otherwise it returns a copy of the frame
    # (4 ms of a 2048x1536 frame's 47, for the same pixels).
    if _orientation(img) in _TURNING_ORIENTATIONS:
        with contextlib.suppress(Exception):  # a malformed EXIF block must not cost the frame: keep it unrotated
            img = ImageOps.exif_transpose(img)
    return _to_rgb(img)


def decode_image(data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode encoded image bytes to an upright RGB ``PIL.Image`` at full size.

    Raises :class:`ImageDecodeError` with a reason a user can act on: empty file, not an image,
    truncated, too many pixels for the decompression-bomb guard.
    """
    return _load_upright_rgb(_open(data, max_pixels))


def load_sized(
    data: bytes,
    dims: Callable[[int, int], tuple[int, int]],
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    decode: DecodeMode = DEFAULT_DECODE,
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode, orient, convert to RGB and LANCZOS-resize to ``dims(upright width, upright height)``.

    The output size is a function of the original size only, so ``exact`` and ``fast`` give images of
    the same size. Returns the image and the upright original size. ``fast`` falls back to ``exact``
    should the reduced decode not cover the output size or come out turned (only an orientation that
    ``exif_transpose`` read otherwise than :func:`_upright_size` could cause that), so it never upsamples
    where ``exact`` shrinks.
    """
    img = _open(data, max_pixels)
    if check_decode(decode) == "exact":
        out = _load_upright_rgb(img)
        return resize_to(out, dims(*out.size)), out.size
    original = _upright_size(img)
    size = dims(*original)
    _draft(img, size)
    out = _load_upright_rgb(img)
    turned = (out.width - out.height) * (original[0] - original[1]) < 0
    if out.width < size[0] or out.height < size[1] or turned:
        return load_sized(data, dims, max_pixels, "exact")
    return resize_to(out, size), original


def resize_to(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """PIL LANCZOS to ``size``, the one resampling of every rule here (no-op when the size already matches)."""
    return img if img.size == size else img.resize(size, resample=Image.Resampling.LANCZOS)


def resize_long_side(img: Image.Image, long_side: int) -> Image.Image:
    """Resize with the seed's rule and PIL LANCZOS (no-op when the size already matches)."""
    return resize_to(img, resize_dims(*img.size, long_side))


def load_resized(
    data: bytes, long_side: int, max_pixels: int | None = DEFAULT_MAX_PIXELS, decode: DecodeMode = DEFAULT_DECODE
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode, orient, convert to RGB and resize with the seed's rule; returns the image and the upright
    original size. ``decode``: ``exact`` (the seed's bytes) or ``fast`` (same sizes, see the module doc)."""
    return load_sized(data, lambda w, h: resize_dims(w, h, long_side), max_pixels, decode)


def encode_jpeg(img: Image.Image, quality: int = 95) -> bytes:
    """JPEG bytes; deterministic for a given image and quality (no timestamps, fixed subsampling)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, subsampling="4:2:0", optimize=False)
    return buf.getvalue()
