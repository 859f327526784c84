"""What each species looks like: a body plan of simple shapes, colours and a coat pattern.

Why shapes and not photographs: a drawn silhouette is free to ship, exact for a seed and different per
species in the ways a classifier can learn (outline, size ratios, coat). Each species is a set of
ellipses ("e") and capsules ("s") in its own units (x towards the head, y down). Parts: body
(patterned), shade (body, darker), accent (mane, tail tuft, beard), horn (horns, tusks, ossicones).
The default species are drawn by hand; any other competition class gets a plan derived from its name,
so every class can be asked for.
"""

from __future__ import annotations

import colorsys
import itertools
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BODY, SHADE, ACCENT, HORN = 1, 2, 3, 4
Shape = tuple  # ("e", part, cx, cy, rx, ry) or ("s", part, x0, y0, x1, y1, r)

_BIRDS = frozenset({"guineafowl", "koribustard", "ostrich", "otherbird", "secretarybird", "vulture"})
_DERIVED_PATTERNS = ("plain", "spots", "stripes", "two_tone", "brindled")


def _ell(part: int, cx: float, cy: float, rx: float, ry: float) -> Shape:
    return ("e", part, cx, cy, rx, ry)


def _seg(part: int, x0: float, y0: float, x1: float, y1: float, r: float) -> Shape:
    return ("s", part, x0, y0, x1, y1, r)


def _poly(part: int, points: Sequence[tuple[float, float]], r: float) -> list[Shape]:
    return [_seg(part, *a, *b, r) for a, b in itertools.pairwise(points)]


def _legs(xs: Sequence[float], top: float, bottom: float, r: float) -> list[Shape]:
    """Four legs; the far ones (odd positions) a little shorter and darker: a hint of depth."""
    shapes = []
    for i, x in enumerate(xs):
        far = i % 2 == 1
        shapes.append(_seg(SHADE if far else BODY, x, top, x + 0.02, bottom - (0.03 if far else 0.0), r))
    return shapes


@dataclass(frozen=True)
class Style:
    """How a species is drawn: its shapes, its coat pattern and the colours of its parts."""

    shapes: tuple[Shape, ...]
    pattern: str
    main: tuple[float, float, float]
    second: tuple[float, float, float] = (0.1, 0.08, 0.07)
    belly: tuple[float, float, float] = (0.92, 0.9, 0.85)
    accent: tuple[float, float, float] = (0.12, 0.1, 0.09)
    horn: tuple[float, float, float] = (0.2, 0.18, 0.16)
    freq: float = 8.0
    marks: tuple[float, ...] = ()  # pattern-specific y levels, in shape units

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(x_lo, y_lo, x_hi, y_hi) over all shapes, in shape units: the box the animal is drawn in."""
        x_lo, y_lo, x_hi, y_hi = math.inf, math.inf, -math.inf, -math.inf
        for s in self.shapes:
            if s[0] == "e":
                _, _, cx, cy, rx, ry = s
                x_lo, x_hi, y_lo, y_hi = (
                    min(x_lo, cx - rx),
                    max(x_hi, cx + rx),
                    min(y_lo, cy - ry),
                    max(y_hi, cy + ry),
                )
            else:
                _, _, x0, y0, x1, y1, r = s
                x_lo, x_hi = min(x_lo, x0 - r, x1 - r), max(x_hi, x0 + r, x1 + r)
                y_lo, y_hi = min(y_lo, y0 - r, y1 - r), max(y_hi, y0 + r, y1 + r)
        return x_lo, y_lo, x_hi, y_hi


def _zebra() -> Style:
    shapes = [
        _seg(BODY, -0.5, -0.08, -0.62, 0.35, 0.025), _seg(ACCENT, -0.62, 0.3, -0.63, 0.43, 0.04),
        *_legs((-0.38, -0.28, 0.28, 0.38), 0.05, 0.72, 0.045),
        _ell(BODY, 0.0, 0.0, 0.5, 0.22), _ell(BODY, -0.32, -0.02, 0.2, 0.21), _ell(BODY, 0.3, 0.0, 0.2, 0.21),
        _seg(BODY, 0.38, -0.08, 0.6, -0.42, 0.1), _seg(BODY, 0.6, -0.45, 0.8, -0.2, 0.07),
        _seg(BODY, 0.58, -0.5, 0.55, -0.62, 0.025), _seg(ACCENT, 0.33, -0.22, 0.56, -0.56, 0.035),
        _ell(ACCENT, 0.8, -0.2, 0.06, 0.05),
    ]  # fmt: skip
    return Style(
        tuple(shapes), "stripes", main=(0.94, 0.93, 0.9), second=(0.06, 0.06, 0.07), freq=7.0, marks=(0.16,)
    )


def _wildebeest() -> Style:
    shapes = [
        _seg(ACCENT, -0.48, -0.08, -0.58, 0.38, 0.035),
        *_legs((-0.35, -0.25, 0.25, 0.35), 0.05, 0.7, 0.036),
        _ell(BODY, 0.0, 0.0, 0.48, 0.2), _ell(BODY, 0.25, -0.08, 0.26, 0.25),
        _seg(BODY, 0.35, -0.08, 0.55, -0.18, 0.13), _seg(BODY, 0.55, -0.22, 0.72, 0.15, 0.075),
        _seg(ACCENT, 0.44, 0.02, 0.56, 0.22, 0.045), _seg(ACCENT, 0.12, -0.32, 0.5, -0.3, 0.045),
        *_poly(HORN, [(0.5, -0.26), (0.4, -0.36), (0.47, -0.46)], 0.028),
        *_poly(HORN, [(0.6, -0.26), (0.7, -0.36), (0.64, -0.46)], 0.028),
    ]  # fmt: skip
    return Style(tuple(shapes), "brindled", main=(0.26, 0.27, 0.31), second=(0.14, 0.14, 0.16), freq=6.0)


def _gazellethomsons() -> Style:
    shapes = [
        _seg(ACCENT, -0.38, -0.05, -0.46, 0.1, 0.035),
        *_legs((-0.27, -0.2, 0.22, 0.29), 0.05, 0.6, 0.03),
        _ell(BODY, 0.0, 0.0, 0.38, 0.19), _seg(BODY, 0.28, -0.05, 0.5, -0.38, 0.07),
        _seg(BODY, 0.5, -0.42, 0.68, -0.32, 0.055), _seg(BODY, 0.5, -0.45, 0.43, -0.56, 0.026),
        _seg(HORN, 0.52, -0.46, 0.44, -0.74, 0.018), _seg(HORN, 0.56, -0.46, 0.49, -0.73, 0.018),
    ]  # fmt: skip
    return Style(
        tuple(shapes), "side_stripe", main=(0.9, 0.76, 0.5), second=(0.06, 0.05, 0.04), belly=(0.98, 0.97, 0.94),
        marks=(-0.04, 0.06, 0.2),
    )  # fmt: skip


def _elephant() -> Style:
    shapes = [
        _seg(BODY, -0.5, -0.1, -0.56, 0.3, 0.02),
        *_legs((-0.32, -0.2, 0.2, 0.32), 0.1, 0.75, 0.085),
        _ell(BODY, 0.0, 0.0, 0.5, 0.34), _ell(BODY, 0.5, -0.12, 0.2, 0.22),
        *_poly(BODY, [(0.62, -0.02), (0.68, 0.3), (0.66, 0.6), (0.72, 0.68)], 0.055),
        _ell(SHADE, 0.36, -0.08, 0.17, 0.25),
        *_poly(HORN, [(0.6, 0.05), (0.7, 0.18), (0.8, 0.2)], 0.024),
    ]  # fmt: skip
    return Style(tuple(shapes), "wrinkled", main=(0.45, 0.42, 0.39), horn=(0.93, 0.9, 0.8), freq=14.0)


def _giraffe() -> Style:
    shapes = [
        _seg(BODY, -0.38, 0.0, -0.45, 0.45, 0.018), _seg(ACCENT, -0.45, 0.42, -0.46, 0.52, 0.03),
        *_legs((-0.3, -0.2, 0.22, 0.32), 0.05, 1.05, 0.045),
        _ell(BODY, -0.15, 0.03, 0.25, 0.16), _ell(BODY, 0.15, -0.04, 0.27, 0.2),
        _seg(BODY, 0.28, -0.1, 0.62, -0.95, 0.1), _seg(ACCENT, 0.22, -0.16, 0.56, -0.98, 0.025),
        _seg(BODY, 0.6, -0.98, 0.8, -0.9, 0.055),
        _seg(HORN, 0.6, -1.02, 0.59, -1.12, 0.017), _seg(HORN, 0.64, -1.02, 0.64, -1.12, 0.017),
    ]  # fmt: skip
    return Style(
        tuple(shapes), "reticulated", main=(0.96, 0.92, 0.78), second=(0.5, 0.26, 0.1), accent=(0.35, 0.2, 0.1),
        horn=(0.35, 0.22, 0.12), freq=4.5, marks=(0.75,),
    )  # fmt: skip


def _impala() -> Style:
    shapes = [
        _seg(ACCENT, -0.44, -0.05, -0.52, 0.12, 0.03),
        *_legs((-0.32, -0.23, 0.24, 0.33), 0.05, 0.9, 0.03),
        _ell(BODY, 0.0, 0.0, 0.44, 0.18), _seg(BODY, 0.3, -0.05, 0.52, -0.38, 0.075),
        _seg(BODY, 0.52, -0.42, 0.7, -0.3, 0.058), _seg(BODY, 0.52, -0.46, 0.44, -0.56, 0.028),
        *_poly(HORN, [(0.53, -0.46), (0.46, -0.62), (0.53, -0.78), (0.48, -0.9)], 0.02),
    ]  # fmt: skip
    return Style(
        tuple(shapes), "two_tone", main=(0.66, 0.36, 0.18), second=(0.45, 0.2, 0.08), belly=(0.95, 0.93, 0.9),
        marks=(-0.06, 0.1, 0.18),
    )  # fmt: skip


_HANDMADE = {
    "zebra": _zebra,
    "wildebeest": _wildebeest,
    "gazellethomsons": _gazellethomsons,
    "elephant": _elephant,
    "giraffe": _giraffe,
    "impala": _impala,
}


def style_for(name: str) -> Style:
    """Hand-drawn for the default species; for any other class a shape and coat derived from its name
    (crc32, stable across runs and machines), so every class can be asked for."""
    if name in _HANDMADE:
        return _HANDMADE[name]()
    g = np.random.default_rng(zlib.crc32(name.encode("utf-8")))
    shapes, ry = _bird_shapes(g) if name in _BIRDS else _quadruped_shapes(g)
    # Earth tones, from grey through rufous to tawny, light to near-black: savanna animals, not parrots.
    hue, sat, val = float(g.uniform(0.02, 0.13)), float(g.uniform(0.0, 0.6)), float(g.uniform(0.2, 0.9))
    main = colorsys.hsv_to_rgb(hue, sat, val)
    second = colorsys.hsv_to_rgb(hue, min(1.0, sat + 0.1), val * float(g.uniform(0.2, 0.55)))
    pattern = _DERIVED_PATTERNS[int(g.integers(len(_DERIVED_PATTERNS)))]
    marks = (0.5 * ry,) if pattern == "stripes" else (-0.3 * ry, 0.5 * ry, ry)
    return Style(shapes, pattern, main=main, second=second, freq=float(g.uniform(5, 10)), marks=marks)


def _quadruped_shapes(g: np.random.Generator) -> tuple[tuple[Shape, ...], float]:
    """A random four-legged plan and its body half-height (where the coat's belly and legs begin)."""
    rx, ry = g.uniform(0.35, 0.55), g.uniform(0.13, 0.3)
    leg_len, leg_r = g.uniform(0.25, 0.75), g.uniform(0.025, 0.08)
    neck_len, neck_angle, neck_r = (
        g.uniform(0.15, 0.6),
        math.radians(g.uniform(10, 70)),
        g.uniform(0.05, 0.12),
    )
    head_len, head_r = g.uniform(0.12, 0.3), g.uniform(0.05, 0.11)
    nx0, ny0 = 0.75 * rx, -0.3 * ry
    nx1, ny1 = nx0 + neck_len * math.cos(neck_angle), ny0 - neck_len * math.sin(neck_angle)
    hx1, hy1 = nx1 + head_len * math.cos(0.6), ny1 + head_len * math.sin(0.6)
    shapes = [
        _seg(BODY, -0.95 * rx, -0.2 * ry, -rx - 0.1, g.uniform(0.05, 0.4), 0.025),
        *_legs((-0.7 * rx, -0.5 * rx, 0.5 * rx, 0.7 * rx), 0.3 * ry, 0.5 * ry + leg_len, leg_r),
        _ell(BODY, 0.0, 0.0, rx, ry),
        _seg(BODY, nx0, ny0, nx1, ny1, neck_r),
        _seg(BODY, nx1, ny1, hx1, hy1, head_r),
    ]
    if g.random() < 0.5:
        shapes += _poly(HORN, [(nx1, ny1 - head_r), (nx1 - 0.05, ny1 - head_r - 0.15)], 0.02)
    return tuple(shapes), ry


def _bird_shapes(g: np.random.Generator) -> tuple[tuple[Shape, ...], float]:
    """A random two-legged plan with a tail, neck and beak, and its body half-height."""
    rx, ry = g.uniform(0.25, 0.4), g.uniform(0.15, 0.25)
    leg_len, neck_len = g.uniform(0.15, 0.9), g.uniform(0.05, 0.8)
    head = (0.8 * rx + 0.1, -ry - neck_len)
    shapes = (
        _seg(SHADE, -0.02, 0.5 * ry, -0.02, 0.6 * ry + leg_len, 0.02),
        _seg(BODY, 0.04, 0.5 * ry, 0.06, 0.6 * ry + leg_len, 0.02),
        _ell(BODY, 0.0, 0.0, rx, ry),
        _seg(SHADE, -rx * 0.9, -0.1 * ry, -rx * 1.3, 0.3 * ry, 0.06),  # tail feathers
        _seg(BODY, 0.7 * rx, -0.4 * ry, *head, 0.035),
        _ell(BODY, head[0], head[1], 0.06, 0.05),
        _seg(HORN, head[0] + 0.04, head[1], head[0] + 0.13, head[1] + 0.03, 0.015),  # beak
    )
    return shapes, ry
