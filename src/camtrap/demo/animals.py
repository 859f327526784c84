"""Animals in a sequence: a species' look rasterised, placed in the scene and walked across the frames.

Why here and not with the species: this is where sizes follow from the scene (small near the horizon,
big near the camera), where night turns fur gray under the flash, and where each frame gets its
animals and their shadows. Every random choice comes from the sequence's generator, in a fixed order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from camtrap.data.classes import EMPTY
from camtrap.demo.planning import round_half_up
from camtrap.demo.scenes import LUMA, capsule_mask, flash_light, shade_ellipse
from camtrap.demo.species import ACCENT, HORN, SHADE, Style

_HERD_P = (0.6, 0.25, 0.15)  # 1, 2, 3 individuals of one species
_SCALE_RANGE = (0.18, 0.50)  # animal height as a fraction of the image height
_NEAR_POWER = 0.6  # distance u ** this, u uniform: most animals in the near half, about 1 in 10 far off
_SCALE_JITTER = 0.03  # spread of that height around what the distance says
_MIN_ANIMAL_PX = 4
_STRETCH_RANGE = (0.9, 1.1)  # individuals are a little longer or shorter than their species' plan
_MAX_SPEED = 0.06  # walk per frame, a share of the image width
_DRIFT_SIGMA = 0.005  # up or down the image per frame, a share of its height
_GROUND_MARGIN = 0.04  # the farthest animals stand this far below the highest horizon point ...
_NEAREST_BOTTOM = 0.97  # ... the nearest with their feet this far down the frame
_SHADOW_STRENGTH = 0.35
_NIGHT_MIN_LIGHT = 0.3  # the flash still catches an animal near the horizon: dim, not black
_NIGHT_ANIMAL_GAIN = 1.2  # an animal stands up into the flash: lit more than the ground at its feet
_NIGHT_FUR = (0.75, 0.25)  # gray = a * luma + b: fur reflects infrared, even dark coats come out light gray
_BELLY_HALF_WIDTH = 0.45  # a white belly between the legs, in shape units


def _mix(a: Sequence[float], b: Sequence[float], t: np.ndarray) -> np.ndarray:
    """Colour ``a`` where ``t`` is 0, ``b`` where it is 1: (..., 3) float32."""
    a_ = np.asarray(a, dtype=np.float32)
    b_ = np.asarray(b, dtype=np.float32)
    return a_ + (b_ - a_) * t.astype(np.float32)[..., None]


def _coat(style: Style, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Body colour (H, W, 3) over the shape grid: X is (1, W), Y is (H, 1), in shape units.

    ``style.marks`` are the y levels a pattern needs: stripes and reticulated (leg top,), side_stripe
    (band top, belly top, leg top), two_tone (back bottom, belly top, leg top)."""
    f, tau = style.freq, 2 * math.pi
    shape = np.broadcast_shapes(X.shape, Y.shape)
    zeros = np.zeros(shape, dtype=np.float32)
    if style.pattern == "stripes":
        body = np.sin(tau * f * (X + 0.12 * np.sin(4.0 * Y)))
        legs = np.sin(tau * f * 1.4 * Y)
        s = np.where(Y > style.marks[0], legs, body)
        return _mix(style.main, style.second, np.clip(0.5 + 2.5 * s, 0, 1))
    if style.pattern == "reticulated":
        wx = X + 0.05 * np.sin(tau * 2.5 * Y)
        wy = Y + 0.05 * np.sin(tau * 2.5 * X)
        line = np.minimum(np.abs(np.sin(math.pi * f * wx)), np.abs(np.sin(math.pi * f * wy)))
        patch = np.clip((line - 0.2) * 6.0, 0, 1)
        patch = np.where(Y > style.marks[0], 0.0, patch)  # plain legs
        return _mix(style.main, style.second, patch)
    if style.pattern == "spots":
        wx = X + 0.04 * np.sin(tau * 3 * Y)
        dots = np.cos(tau * f * wx) * np.cos(tau * f * Y) > 0.6
        return _mix(style.main, style.second, dots + zeros)
    if style.pattern == "side_stripe":
        band_top, belly_top, leg_top = style.marks
        t = np.where((Y > band_top) & (Y <= belly_top), 1.0, 0.0) + zeros
        out = _mix(style.main, style.second, t)
        belly = (Y > belly_top) & (Y <= leg_top) & (np.abs(X) < _BELLY_HALF_WIDTH)
        out[np.broadcast_to(belly, shape)] = style.belly
        return out
    if style.pattern == "two_tone":
        back_bottom, belly_top, leg_top = style.marks
        t = np.clip((back_bottom - Y) * 12.0 + 0.5, 0, 1) + zeros
        out = _mix(style.main, style.second, t)
        belly = (Y > belly_top) & (Y <= leg_top) & (np.abs(X) < _BELLY_HALF_WIDTH)
        out[np.broadcast_to(belly, shape)] = style.belly
        return out
    if style.pattern == "wrinkled":
        lines = np.sin(tau * f * Y + 3.0 * np.sin(tau * 1.5 * X))
        return _mix(style.main, style.second, np.clip(lines - 0.7, 0, 1) * 0.5 + zeros)
    if style.pattern == "brindled":
        bands = np.sin(tau * f * (X + 0.1 * Y)) > 0.3
        return _mix(style.main, style.second, np.where((X > -0.2) & bands, 0.4, 0.0) + zeros)
    return _mix(style.main, style.main, zeros)


def _render_animal(
    style: Style, height: int, stretch: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Colour (h, w, 3) and alpha (h, w) of one animal ``height`` pixels tall, facing right."""
    x_lo, y_lo, x_hi, y_hi = style.bounds
    sy = height / (y_hi - y_lo)
    sx = sy * stretch
    width = max(2, math.ceil((x_hi - x_lo) * sx))
    X = (x_lo + (np.arange(width, dtype=np.float32) + 0.5) / sx)[None, :]
    Y = (y_lo + (np.arange(height, dtype=np.float32) + 0.5) / sy)[:, None]
    part = np.zeros((height, width), dtype=np.uint8)
    for s in style.shapes:
        if s[0] == "e":
            _, pid, cx, cy, rx, ry = s
            j0, j1, i0, i1 = _span(cx - rx, cx + rx, x_lo, sx, width) + _span(
                cy - ry, cy + ry, y_lo, sy, height
            )
            m = ((X[:, j0:j1] - cx) / rx) ** 2 + ((Y[i0:i1] - cy) / ry) ** 2 <= 1.0
        else:
            _, pid, x0, y0, x1, y1, r = s
            j0, j1 = _span(min(x0, x1) - r, max(x0, x1) + r, x_lo, sx, width)
            i0, i1 = _span(min(y0, y1) - r, max(y0, y1) + r, y_lo, sy, height)
            m = capsule_mask(X[:, j0:j1], Y[i0:i1], x0, y0, x1, y1, r)
        part[i0:i1, j0:j1][m] = pid

    rgb = _coat(style, X, Y)
    rgb[part == SHADE] *= 0.72
    rgb[part == ACCENT] = style.accent
    rgb[part == HORN] = style.horn
    light = 1.12 - 0.3 * (Y - y_lo) / (y_hi - y_lo)  # lit from above
    grain = 1.0 + 0.05 * rng.standard_normal((height, width), dtype=np.float32)
    rgb *= (light * grain)[..., None]

    alpha = (part > 0).astype(np.float32)
    if height > 2 and width > 2:  # soften the cut-out edge a little
        inner = alpha[1:-1, 1:-1]
        alpha[1:-1, 1:-1] = 0.5 * inner + 0.125 * (
            alpha[:-2, 1:-1] + alpha[2:, 1:-1] + alpha[1:-1, :-2] + alpha[1:-1, 2:]
        )
    return rgb, alpha


def _span(lo: float, hi: float, origin: float, scale: float, n: int) -> tuple[int, int]:
    """Pixel range [a, b) that covers [lo, hi] in shape units, one pixel of margin, clipped to [0, n)."""
    a = max(0, math.floor((lo - origin) * scale) - 1)
    b = min(n, math.ceil((hi - origin) * scale) + 1)
    return a, b


@dataclass
class Animal:
    """One individual in a sequence: its pixels, drawn once, and where it stands in each frame."""

    rgb: np.ndarray  # 0-255 floats, (h, w, 3) by day, (h, w) at night
    alpha: np.ndarray
    centre_x: list[float]  # per frame, pixels
    bottom_y: list[float]


def place_animals(
    labels: tuple[str, ...],
    styles: dict[str, Style],
    rng: np.random.Generator,
    w: int,
    h: int,
    horizon: np.ndarray,
    num_frames: int,
    night_gain: float | None,
) -> list[Animal]:
    """Animals of a sequence: size by distance (small near the horizon), a heading and a walk."""
    if labels == (EMPTY,):
        return []
    animals = []
    ground_top = float(horizon.max()) + _GROUND_MARGIN
    for name in labels:
        herd = 1 + int(rng.choice(len(_HERD_P), p=_HERD_P)) if len(labels) == 1 else 1
        for _ in range(herd):
            near = float(rng.uniform(0.0, 1.0)) ** _NEAR_POWER  # 0: at the horizon, 1: at the camera
            scale = float(
                np.clip(
                    _SCALE_RANGE[0]
                    + near * (_SCALE_RANGE[1] - _SCALE_RANGE[0])
                    + rng.normal(0, _SCALE_JITTER),
                    *_SCALE_RANGE,
                )
            )
            ah = max(_MIN_ANIMAL_PX, round_half_up(scale * h))
            bottom = max(ground_top * h + near * (_NEAREST_BOTTOM - ground_top) * h, 0.9 * ah)
            rgb, alpha = _render_animal(styles[name], ah, float(rng.uniform(*_STRETCH_RANGE)), rng)
            facing = 1 if rng.random() < 0.5 else -1
            if facing < 0:
                rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
            aw = alpha.shape[1]
            x = float(rng.uniform(0.3 * aw, max(0.3 * aw + 1, w - 0.3 * aw)))
            speed = float(rng.uniform(0.0, _MAX_SPEED)) * w * facing
            drift = float(rng.normal(0, _DRIFT_SIGMA)) * h
            xs = [float(np.clip(x + k * speed, 0, w)) for k in range(num_frames)]
            ys = [bottom + k * drift for k in range(num_frames)]
            if night_gain is not None:  # infrared: fur reflects; lit a little more than the ground it stands on
                flash = float(flash_light(x / w, (bottom - 0.3 * ah) / h)) * night_gain * _NIGHT_ANIMAL_GAIN
                light = min(1.0, max(_NIGHT_MIN_LIGHT, flash))
                rgb = np.clip((rgb @ LUMA) * _NIGHT_FUR[0] + _NIGHT_FUR[1], 0, 1) * light
            rgb = np.ascontiguousarray(rgb * np.float32(255.0))
            animals.append(Animal(rgb, np.ascontiguousarray(alpha), xs, ys))
    return sorted(animals, key=lambda a: a.bottom_y[0])  # far ones first


def draw_animals(frame: np.ndarray, animals: Sequence[Animal], k: int) -> None:
    """Frame ``k`` of a sequence: each animal where it walked to, on its shadow, far ones first."""
    for a in animals:
        ah, aw = a.alpha.shape
        cx, by = a.centre_x[k], a.bottom_y[k]
        shade_ellipse(frame, cx, by - 0.02 * ah, 0.45 * aw, 0.06 * ah, _SHADOW_STRENGTH)
        _composite(frame, a.rgb, a.alpha, round_half_up(cx - aw / 2), round_half_up(by - ah))


def _composite(frame: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, x0: int, y0: int) -> None:
    """Alpha-blend an animal (0-255 floats) into a uint8 frame, clipped at the frame's edges."""
    h, w = frame.shape[:2]
    ah, aw = alpha.shape
    fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(w, x0 + aw), min(h, y0 + ah)
    if fx0 >= fx1 or fy0 >= fy1:
        return
    a = alpha[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    c = rgb[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    region = frame[fy0:fy1, fx0:fx1]
    mixed = region.astype(np.float32)
    mixed += (c - mixed) * (a[..., None] if region.ndim == 3 else a)
    mixed += 0.5
    region[...] = np.clip(mixed, 0, 255)
