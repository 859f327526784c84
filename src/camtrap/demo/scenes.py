"""The background of a sequence: a savanna by day, an infrared-flash frame by night, a camera's info strip.

Why drawn rather than sampled: the pipeline must see what real camera traps produce, a fixed view per
camera (horizon, trees, rocks: from the site's seed) under light, sky, grass and grain that change with
every sequence, and night frames that are gray with a black sky. All of it comes from the generator
passed in, so a sequence's scene depends on its seed only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from camtrap.demo.planning import Site, round_half_up

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 weights: RGB to gray

_DRAW_LONG_SIDE = 1024  # scenes are drawn at most this big, then resized
_DAYLIGHT_RANGE = (0.85, 1.1)  # brightness of a day scene: time of day, cloud cover
_NIGHT_SKY = 0.02  # the flash does not reach the sky: near black
_NIGHT_GRAIN = 0.03  # sensor noise of a night frame, a share of full scale

_BANNER_HEIGHT = 0.04  # the info strip, a share of the frame height ...
_BANNER_MIN_PX = 6  # ... but never thinner than this
_GLYPH_ROWS, _GLYPH_COLS = 5, 4  # a character: 5 rows of 3 cells, then a blank column before the next
_GLYPH_HEIGHT = 0.6  # text height, a share of the strip
_BRAND_CHARS = 12  # camera brand and model, left
_STAMP_CHARS = len("2010-07-20 12:00:00")  # date and time, right
_GLYPH_INK = 0.55  # share of a glyph's cells that are ink

# --------------------------------------------------------------------------------------------------
# Drawing helpers. Images are float32 in [0, 1], (H, W, 3) by day and (H, W) at night; every shape is
# drawn inside its own bounding box so the cost follows the shape's area, not the image's.


def _smooth_noise(rng: np.random.Generator, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Gaussian noise on a coarse ``grid`` (rows, cols) blown up to ``size`` (h, w): blotches, streaks."""
    small = rng.standard_normal((max(2, grid[0]), max(2, grid[1])), dtype=np.float32)
    h, w = size
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def _box(cx: float, cy: float, rx: float, ry: float, w: int, h: int) -> tuple[int, int, int, int] | None:
    x0, x1 = max(0, int(cx - rx)), min(w, math.ceil(cx + rx) + 1)
    y0, y1 = max(0, int(cy - ry)), min(h, math.ceil(cy + ry) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def _ellipse_weight(
    img: np.ndarray, cx: float, cy: float, rx: float, ry: float, soft: float = 0.0
) -> tuple[tuple[slice, slice], np.ndarray] | tuple[None, None]:
    """The region of ``img`` around an ellipse and a weight in [0, 1] over it (a hard or soft edge)."""
    h, w = img.shape[:2]
    box = _box(cx, cy, rx, ry, w, h)
    if box is None:
        return None, None
    x0, y0, x1, y1 = box
    xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx) / rx
    ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy) / ry
    d2 = ys[:, None] ** 2 + xs[None, :] ** 2
    if soft > 0:
        weight = np.clip((1.0 - d2) / soft, 0.0, 1.0)
    else:
        weight = (d2 <= 1.0).astype(np.float32)
    return (slice(y0, y1), slice(x0, x1)), weight


def _paint_ellipse(
    img: np.ndarray,
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    colour: Sequence[float],
    soft: float = 0.0,
    texture: float = 0.0,
    rng: np.random.Generator | None = None,
) -> None:
    """Blend ``colour`` into a float image over an ellipse; ``texture`` adds per-pixel shade noise."""
    region, weight = _ellipse_weight(img, cx, cy, rx, ry, soft)
    if region is None:
        return
    patch = img[region]
    target = np.asarray(colour, dtype=np.float32)
    if texture > 0 and rng is not None:
        shade = 1.0 + texture * rng.standard_normal(weight.shape, dtype=np.float32)
        target = target * shade[..., None] if patch.ndim == 3 else target * shade
    if patch.ndim == 3:
        weight = weight[..., None]
    patch += (target - patch) * weight


def shade_ellipse(img: np.ndarray, cx: float, cy: float, rx: float, ry: float, strength: float) -> None:
    """Darken a uint8 frame softly, rounding to nearest: the shadow under an animal."""
    region, weight = _ellipse_weight(img, cx, cy, rx, ry, soft=1.0)
    if region is None:
        return
    factor = 1.0 - strength * weight
    shaded = img[region] * (factor[..., None] if img.ndim == 3 else factor)
    img[region] = shaded + 0.5


def _paint_capsule(
    img: np.ndarray, x0: float, y0: float, x1: float, y1: float, r: float, colour: Sequence[float]
) -> None:
    """A thick line with round ends: tree trunks and branches."""
    h, w = img.shape[:2]
    box = _box((x0 + x1) / 2, (y0 + y1) / 2, abs(x1 - x0) / 2 + r, abs(y1 - y0) / 2 + r, w, h)
    if box is None:
        return
    bx0, by0, bx1, by1 = box
    px = np.arange(bx0, bx1, dtype=np.float32)[None, :] + 0.5
    py = np.arange(by0, by1, dtype=np.float32)[:, None] + 0.5
    mask = capsule_mask(px, py, x0, y0, x1, y1, r)
    patch = img[by0:by1, bx0:bx1]
    patch[mask] = np.asarray(colour, dtype=np.float32)


def capsule_mask(
    px: np.ndarray, py: np.ndarray, x0: float, y0: float, x1: float, y1: float, r: float
) -> np.ndarray:
    """Where the points (px, py), broadcast against each other, lie within ``r`` of the segment."""
    dx, dy = x1 - x0, y1 - y0
    length2 = max(dx * dx + dy * dy, 1e-12)
    qx, qy = px - x0, py - y0
    t = np.clip((qx * dx + qy * dy) / length2, 0.0, 1.0)
    return (qx - t * dx) ** 2 + (qy - t * dy) ** 2 <= r * r


# --------------------------------------------------------------------------------------------------
# Scenes. The camera's view (horizon, trees, rocks) belongs to the site; light, sky, grass and grain
# change with every sequence, like real captures of one camera across days.


@dataclass(frozen=True)
class Layout:
    horizon_x: np.ndarray  # control points, fractions of width
    horizon_y: np.ndarray  # fractions of height
    ground_far: np.ndarray
    ground_near: np.ndarray
    trees: tuple[tuple[float, float, float], ...]  # x, base y (fractions), height (fraction of H)
    rocks: tuple[tuple[float, float, float], ...]  # x, base y, width (fraction of W)
    bushes: tuple[tuple[float, float, float], ...]


_GROUND_PALETTES = (
    ((0.74, 0.68, 0.47), (0.60, 0.52, 0.30)),  # dry grass
    ((0.55, 0.60, 0.38), (0.38, 0.45, 0.20)),  # green after rain
    ((0.62, 0.56, 0.42), (0.45, 0.38, 0.26)),  # trampled, dusty
    ((0.66, 0.66, 0.44), (0.50, 0.52, 0.27)),  # mixed
)


def site_layout(site: Site) -> Layout:
    rng = np.random.default_rng(site.layout_seed)
    level = rng.uniform(0.24, 0.46)
    n_ctrl = 6
    horizon_y = np.clip(
        level + rng.normal(0, 0.025, n_ctrl) + np.linspace(0, rng.normal(0, 0.04), n_ctrl), 0.15, 0.55
    )
    far, near = _GROUND_PALETTES[int(rng.integers(len(_GROUND_PALETTES)))]
    trees = tuple(
        (
            float(rng.uniform(0.0, 1.0)),
            float(rng.uniform(level + 0.02, level + 0.25)),
            float(rng.uniform(0.12, 0.45)),
        )
        for _ in range(int(rng.integers(0, 4)))
    )
    rocks = tuple(
        (float(rng.uniform(0.0, 1.0)), float(rng.uniform(level + 0.05, 0.95)), float(rng.uniform(0.04, 0.18)))
        for _ in range(int(rng.integers(0, 3)))
    )
    bushes = tuple(
        (float(rng.uniform(0.0, 1.0)), float(level + rng.uniform(0.0, 0.05)), float(rng.uniform(0.02, 0.08)))
        for _ in range(int(rng.integers(2, 9)))
    )
    return Layout(
        horizon_x=np.linspace(0.0, 1.0, n_ctrl),
        horizon_y=horizon_y,
        ground_far=np.asarray(far, dtype=np.float32),
        ground_near=np.asarray(near, dtype=np.float32),
        trees=trees,
        rocks=rocks,
        bushes=bushes,
    )


def draw_scene(
    layout: Layout, rng: np.random.Generator, w: int, h: int, night_gain: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """The sequence's background as uint8, (H, W, 3) by day or (H, W) at night, and the horizon per
    column of the drawing (fractions of H).

    The scene is smooth, so it is drawn with a long side of at most ``_DRAW_LONG_SIDE`` and blown up
    by PIL: four times less numpy work at 2048x1536, the main cost of the whole generator."""
    f = max(1, math.ceil(max(w, h) / _DRAW_LONG_SIDE))
    dw, dh = math.ceil(w / f), math.ceil(h / f)
    img, horizon = _draw_day(layout, rng, dw, dh)
    if night_gain is not None:
        img = _to_night(img, horizon, rng, night_gain)
        img *= 255.0
    else:
        img *= np.float32(255.0 * rng.uniform(*_DAYLIGHT_RANGE))
    img += 0.5
    np.clip(img, 0, 255, out=img)
    pixels = img.astype(np.uint8)
    if (dw, dh) != (w, h):
        pixels = np.asarray(Image.fromarray(pixels).resize((w, h), Image.Resampling.BILINEAR))
    return pixels, horizon


def _draw_day(layout: Layout, rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """A daylight savanna, float (H, W, 3), and the horizon per column (fractions of H).

    Sky and ground are each computed only over the rows they can occupy; the full-frame passes are what
    costs time here."""
    ys = (np.arange(h, dtype=np.float32) + 0.5) / h
    xs = (np.arange(w, dtype=np.float32) + 0.5) / w
    horizon = np.interp(xs, layout.horizon_x, layout.horizon_y).astype(np.float32)
    horizon += 0.01 * _smooth_noise(rng, (2, 12), (1, w))[0]  # distant hills
    sky_end = min(h, math.ceil(float(horizon.max()) * h) + 1)  # rows [0, sky_end) may be sky
    ground_start = max(0, int(float(horizon.min()) * h) - 1)  # rows [ground_start, h) may be ground

    # Sky: blue at the top, hazy towards the horizon, with soft clouds.
    top = np.array([rng.uniform(0.30, 0.55), rng.uniform(0.50, 0.70), rng.uniform(0.78, 0.95)], np.float32)
    haze = np.array([0.86, 0.88, 0.90], np.float32) * np.float32(rng.uniform(0.9, 1.05))
    t = np.clip(ys[:sky_end] / max(float(horizon.max()), 1e-3), 0, 1)[:, None]
    sky_rows = (top + (haze - top) * t)[:, None, :]  # (rows, 1, 3)
    cloud = np.clip(_smooth_noise(rng, (3, 5), (sky_end, w)) - 0.4, 0.0, 1.0) * np.float32(
        rng.uniform(0.0, 0.9)
    )
    sky = sky_rows + (np.float32(0.95) - sky_rows) * cloud[..., None]

    # Ground: hazy far away, darker and richer in front; blotches, grass streaks, grain.
    gh = h - ground_start
    depth = np.clip((ys[ground_start:, None] - horizon[None, :]) / (1.0 - horizon[None, :]), 0.0, 1.0)
    tint = np.asarray(rng.normal(1.0, 0.05, 3), dtype=np.float32)
    far = layout.ground_far * tint
    near = layout.ground_near * tint
    texture = 1.0 + 0.10 * _smooth_noise(rng, (4, 6), (gh, w))
    texture += 0.06 * _smooth_noise(rng, (h // 32 + 2, w // 32 + 2), (gh, w))
    texture += (0.05 + 0.12 * depth) * _smooth_noise(rng, (h // 40 + 2, w // 3 + 2), (gh, w))
    texture += 0.025 * rng.standard_normal((gh, w), dtype=np.float32)
    ground = far * texture[..., None]
    ground += (near - far) * (depth * texture)[..., None]

    img = np.empty((h, w, 3), dtype=np.float32)
    img[:ground_start] = sky[:ground_start]
    img[sky_end:] = ground[sky_end - ground_start :]
    band = ys[ground_start:sky_end, None] < horizon[None, :]
    img[ground_start:sky_end] = np.where(
        band[..., None], sky[ground_start:], ground[: sky_end - ground_start]
    )

    for x, y, size in layout.bushes:
        _paint_ellipse(
            img, x * w, y * h, size * w, size * h * 0.35, (0.22, 0.30, 0.14), soft=0.3, texture=0.15, rng=rng
        )
    for x, y, height in layout.trees:
        _draw_acacia(img, rng, x * w, y * h, height * h)
    for x, y, width in layout.rocks:
        rx, ry = width * w / 2, width * w * 0.3
        _paint_ellipse(img, x * w, y * h, rx, ry, (0.50, 0.48, 0.45), soft=0.05, texture=0.12, rng=rng)
        _paint_ellipse(
            img, x * w - rx * 0.2, y * h - ry * 0.35, rx * 0.6, ry * 0.45, (0.62, 0.60, 0.56), soft=0.6
        )
    return img, horizon


def _draw_acacia(img: np.ndarray, rng: np.random.Generator, x: float, base: float, height: float) -> None:
    """Flat-topped acacia: a trunk, two branches and a wide canopy."""
    bark = (0.28, 0.22, 0.17)
    r = max(1.0, height * 0.035)
    top = base - height * 0.7
    _paint_capsule(img, x, base, x + height * 0.03, top, r, bark)
    _paint_capsule(img, x, top + height * 0.15, x - height * 0.25, base - height * 0.85, r * 0.7, bark)
    _paint_capsule(img, x, top + height * 0.1, x + height * 0.3, base - height * 0.88, r * 0.7, bark)
    leaf = (0.20 + rng.uniform(-0.03, 0.03), 0.30 + rng.uniform(-0.04, 0.04), 0.12)
    canopy_y = base - height * 0.9
    _paint_ellipse(img, x, canopy_y, height * 0.55, height * 0.13, leaf, soft=0.15, texture=0.2, rng=rng)
    _paint_ellipse(
        img,
        x - height * 0.3,
        canopy_y + height * 0.03,
        height * 0.3,
        height * 0.1,
        leaf,
        soft=0.2,
        texture=0.2,
        rng=rng,
    )


def flash_light(x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray | float:
    """Light of the infrared flash at (x, y), fractions of the frame: strong at the bottom centre,
    gone by the horizon, like the real night frames of Snapshot Serengeti."""
    return np.clip(1.3 - ((x - 0.5) / 0.7) ** 2 - ((y - 1.0) / 0.62) ** 2, 0.04, 1.1)


def _to_night(img: np.ndarray, horizon: np.ndarray, rng: np.random.Generator, gain: float) -> np.ndarray:
    """Infrared flash look, (H, W): gray, black sky, a bright foreground fading out, heavy grain."""
    h, w = img.shape[:2]
    lum = img @ LUMA
    ys = (np.arange(h, dtype=np.float32) + 0.5) / h
    xs = (np.arange(w, dtype=np.float32) + 0.5) / w
    light = flash_light(xs[None, :], ys[:, None]).astype(np.float32) * np.float32(gain)
    sky = ys[:, None] < horizon[None, :]
    gray = np.where(sky, np.float32(_NIGHT_SKY), lum * light)
    gray += rng.standard_normal((h, w), dtype=np.float32) * np.float32(_NIGHT_GRAIN)
    return gray


def draw_banner(frame: np.ndarray, rng: np.random.Generator, site: Site) -> None:
    """The camera's info strip along the bottom: brand on the left (fixed per camera), date and time
    on the right (new per frame). Glyphs are random blocks; what matters is a high-contrast band that
    carries no label information, as on the real cameras."""
    h, w = frame.shape[:2]
    bh = max(_BANNER_MIN_PX, round_half_up(_BANNER_HEIGHT * h))
    ink, paper = (242, 5) if site.banner == 1 else (5, 247)  # 1: white on black, 2: black on white
    frame[h - bh :] = paper
    ry = max(1, round_half_up(bh * _GLYPH_HEIGHT / _GLYPH_ROWS))
    rx = max(1, ry)
    brand_rng = np.random.default_rng(site.layout_seed)
    for n_chars, right in ((_BRAND_CHARS, False), (_STAMP_CHARS, True)):
        glyphs = (rng if right else brand_rng).random((_GLYPH_ROWS, n_chars, _GLYPH_COLS)) < _GLYPH_INK
        glyphs[:, :, _GLYPH_COLS - 1] = False  # the gap between characters
        text = glyphs.reshape(_GLYPH_ROWS, n_chars * _GLYPH_COLS).repeat(ry, axis=0).repeat(rx, axis=1)
        th, tw = text.shape
        y0 = h - bh + max(0, (bh - th) // 2)
        x0 = w - tw - bh // 2 if right else bh // 2
        x0, x1 = max(0, x0), min(w, x0 + tw)
        y1 = min(h, y0 + th)
        region = frame[y0:y1, x0:x1]
        region[text[: y1 - y0, : x1 - x0]] = ink
