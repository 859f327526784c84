"""A generated camera-trap dataset in exactly the Snapshot Serengeti competition layout.

Why: the real data is 5 TB and cannot ship with tests, demos or CI. Every job of the platform (prepare,
train, tune, predict, score) reads the same files as in the competition: ``images/<season>/<site>/...JPG``,
``train_metadata.csv``, ``train_labels.csv``, ``test_metadata.csv``, ``submission_format.csv``. This module
writes those files from a seed, with the properties the pipeline must cope with: full-size JPEGs in 4:3 and
16:9, sequences of 1-3 frames that share one scene, night frames stored as grayscale (mode ``L``) or as
RGB with R=G=B, about two thirds ``empty`` sequences and a few with two species. Animals are drawn
silhouettes, one shape, colour and coat pattern per species, big enough to survive a resize to a
128-pixel long side, so a small CNN trained from scratch on a CPU learns them in minutes: a real
end-to-end check, not just a smoke test.

The output is a pure function of the arguments: the same seed gives byte-identical files (one
``numpy.random.default_rng`` stream for the plan, one per sequence for the pixels; JPEGs with fixed
settings and no EXIF; no clock is read).
"""

from __future__ import annotations

import colorsys
import csv
import datetime as dt
import itertools
import math
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from camtrap.data.classes import COMPETITION_CLASSES, DATETIME, EMPTY, FILE_NAME, SEQ_ID

__all__ = [
    "DEFAULT_SIZES",
    "DEFAULT_SPECIES",
    "SMALL_SIZES",
    "TEST_SEASONS",
    "TRAIN_SEASONS",
    "DemoSummary",
    "make_demo_dataset",
]

# (width, height). Snapshot Serengeti cameras shot 2048x1536 (4:3); other camera models and many
# re-hosted copies are 16:9 or smaller, so the pipeline must not assume one size or aspect ratio.
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((2048, 1536), (1024, 768), (1920, 1080), (1280, 720))
# Tiny frames for tests: both aspect ratios, a few milliseconds each.
SMALL_SIZES: tuple[tuple[int, int], ...] = ((320, 240), (320, 180))
DEFAULT_SPECIES: tuple[str, ...] = ("zebra", "wildebeest", "gazellethomsons", "elephant", "giraffe", "impala")

# S1-S2 train (S2 can be held out as the validation season), S3 plays the test season.
TRAIN_SEASONS: tuple[str, ...] = ("S1", "S2")
TEST_SEASONS: tuple[str, ...] = ("S3",)
_SEASON_START = {
    "S1": dt.datetime(2010, 7, 20),
    "S2": dt.datetime(2010, 11, 2),
    "S3": dt.datetime(2011, 5, 4),
}
_SEASON_DAYS = 60
_VALIDATION_SHARE = 1 / 3  # share of the train sequences in the last train season

EMPTY_FRACTION = 2 / 3  # competition: 71 %
TWO_SPECIES_FRACTION = 0.10  # of the non-empty sequences
NIGHT_FRACTION = 0.25
_FRAME_COUNT_P = (0.2, 0.3, 0.5)  # 1, 2, 3 frames; most real captures have 3
_HERD_P = (0.6, 0.25, 0.15)  # 1, 2, 3 individuals of one species
_SCALE_RANGE = (0.15, 0.40)  # animal height as a fraction of the image height
JPEG_QUALITY = 88
_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_DRAW_LONG_SIDE = 1024  # scenes are drawn at most this big, then resized
_MIN_SIDE = 32

_SITE_LETTERS = "BCDEFGHIJKLMNOPQRSTUV"  # the Serengeti camera grid: B04, E03, V10, ...
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`make_demo_dataset` wrote: paths and the counts a caller checks or prints."""

    out_dir: Path
    images_dir: Path
    train_metadata: Path
    train_labels: Path
    test_metadata: Path
    test_labels: Path
    submission_format: Path
    species: tuple[str, ...]
    train_seasons: tuple[str, ...]
    test_seasons: tuple[str, ...]
    num_train_sequences: int
    num_test_sequences: int
    num_train_images: int
    num_test_images: int
    num_empty_sequences: int
    num_two_species_sequences: int
    num_night_sequences: int

    @property
    def num_sequences(self) -> int:
        return self.num_train_sequences + self.num_test_sequences

    @property
    def num_images(self) -> int:
        return self.num_train_images + self.num_test_images

    @property
    def empty_fraction(self) -> float:
        return self.num_empty_sequences / max(1, self.num_sequences)


def make_demo_dataset(
    out_dir: str | Path,
    num_sequences: int = 240,
    seed: int = 0,
    species: Sequence[str] | None = None,
    test_fraction: float = 0.25,
    image_sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    num_workers: int = 1,
) -> DemoSummary:
    """Write a synthetic dataset in the competition layout under ``out_dir`` and say what was written.

    ``species`` names competition classes (default :data:`DEFAULT_SPECIES`); the label files always hold
    all 54 columns. ``image_sizes`` are (width, height) camera resolutions, one per camera site.
    ``num_workers`` > 1 renders sequences in that many processes; the files are the same either way,
    since each sequence draws from its own seed. Existing files of the same names are overwritten;
    nothing else in ``out_dir`` is touched.
    """
    names = _validate_species(DEFAULT_SPECIES if species is None else species)
    sizes = _validate_sizes(image_sizes)
    if int(num_sequences) < 1:
        raise ValueError(f"num_sequences must be at least 1, got {num_sequences}")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")

    out = Path(out_dir)
    images_dir = out / "images"
    plans = _plan_sequences(int(num_sequences), int(seed), names, sizes, float(test_fraction))
    _render_all(plans, names, images_dir, int(num_workers))

    train = [p for p in plans if p.split == "train"]
    test = [p for p in plans if p.split == "test"]
    paths = {
        "train_metadata": out / "train_metadata.csv",
        "train_labels": out / "train_labels.csv",
        "test_metadata": out / "test_metadata.csv",
        "test_labels": out / "test_labels.csv",
        "submission_format": out / "submission_format.csv",
    }
    _write_metadata(paths["train_metadata"], train)
    _write_labels(paths["train_labels"], train)
    _write_metadata(paths["test_metadata"], test)
    _write_labels(paths["test_labels"], test)
    _write_submission_format(paths["submission_format"], test)

    return DemoSummary(
        out_dir=out,
        images_dir=images_dir,
        species=names,
        train_seasons=TRAIN_SEASONS,
        test_seasons=TEST_SEASONS,
        num_train_sequences=len(train),
        num_test_sequences=len(test),
        num_train_images=sum(p.num_frames for p in train),
        num_test_images=sum(p.num_frames for p in test),
        num_empty_sequences=sum(p.labels == (EMPTY,) for p in plans),
        num_two_species_sequences=sum(len(p.labels) == 2 for p in plans),
        num_night_sequences=sum(p.night for p in plans),
        **paths,
    )


def _render_all(plans: list[_SeqPlan], species: tuple[str, ...], images_dir: Path, num_workers: int) -> None:
    if num_workers <= 1 or len(plans) < 2:
        _render_chunk(plans, species, images_dir)
        return
    # Contiguous chunks (one site's sequences are neighbours in plan order, so each worker makes few
    # directories) and a few chunks per worker so a slow one does not hold up the end.
    n_chunks = min(len(plans), num_workers * 4)
    bounds = np.linspace(0, len(plans), n_chunks + 1).astype(int)
    chunks = [plans[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    with ProcessPoolExecutor(max_workers=num_workers) as pool:
        for _ in pool.map(_render_chunk, chunks, [species] * len(chunks), [images_dir] * len(chunks)):
            pass


def _render_chunk(plans: list[_SeqPlan], species: tuple[str, ...], images_dir: Path) -> None:
    styles = {name: _style_for(name) for name in species}
    for plan in plans:
        _render_sequence(plan, styles, images_dir)


# --------------------------------------------------------------------------------------------------
# Arguments


def _validate_species(species: Sequence[str]) -> tuple[str, ...]:
    """Species as a tuple; a bad name fails here, before any file is written."""
    if isinstance(species, str):
        raise TypeError(f"species must be a sequence of class names, not the string {species!r}")
    names = tuple(str(s) for s in species)
    if not names:
        raise ValueError("species must name at least one class")
    for name in names:
        if name == EMPTY:
            raise ValueError(
                f"species must not contain '{EMPTY}': it is the label of sequences without animals"
            )
        if name not in COMPETITION_CLASSES:
            raise ValueError(f"unknown species '{name}': not one of the 54 competition classes")
    if len(set(names)) != len(names):
        raise ValueError(f"species names a class twice: {names!r}")
    return names


def _validate_sizes(image_sizes: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    sizes = tuple((int(w), int(h)) for w, h in image_sizes)
    if not sizes:
        raise ValueError("image_sizes must hold at least one (width, height)")
    for w, h in sizes:
        if w < _MIN_SIDE or h < _MIN_SIDE:
            raise ValueError(f"image size {w}x{h} is below the minimum side of {_MIN_SIDE} pixels")
    return sizes


def _round(x: float) -> int:
    """Round half up: Python's round() goes to even, which makes counts jump oddly with n."""
    return math.floor(x + 0.5)


# --------------------------------------------------------------------------------------------------
# The plan: which sequence is where, when, with what labels. Pixels come later, from render_seed.


@dataclass(frozen=True)
class _Site:
    """One camera: its resolution, how it stores night frames and whether it stamps an info strip."""

    name: str
    size: tuple[int, int]
    night_mode: str  # "L" or "RGB"
    banner: int  # 0: none, 1: black strip with white text, 2: white strip with black text
    layout_seed: int  # the view of the camera: horizon, trees, rocks


@dataclass
class _SeqPlan:
    split: str
    season: str
    site: _Site
    start: dt.datetime
    num_frames: int
    labels: tuple[str, ...]  # species in competition column order, or ("empty",)
    night: bool
    render_seed: int
    roll: int = 1
    capture: int = 0
    first_pict: int = 1

    @property
    def seq_id(self) -> str:
        return f"SER_{self.season}#{self.site.name}#{self.roll}#{self.capture}"

    def file_names(self) -> list[str]:
        s, site, r = self.season, self.site.name, self.roll
        return [
            f"{s}/{site}/{site}_R{r}/{s}_{site}_R{r}_PICT{self.first_pict + k:04d}.JPG"
            for k in range(self.num_frames)
        ]

    def datetimes(self) -> list[str]:
        return [
            (self.start + dt.timedelta(seconds=k)).strftime(_DATETIME_FORMAT) for k in range(self.num_frames)
        ]


def _plan_sequences(
    n: int, seed: int, species: tuple[str, ...], sizes: tuple[tuple[int, int], ...], test_fraction: float
) -> list[_SeqPlan]:
    """Every sequence's split, season, site, time, frame count and labels, in output order."""
    rng = np.random.default_rng(seed)
    sites = _make_sites(rng, n, sizes)
    n_test = min(n - 1, _round(n * test_fraction)) if n > 1 else 0
    n_train = n - n_test
    n_valid = _round(n_train * _VALIDATION_SHARE) if n_train > 2 else 0
    counts = [("train", TRAIN_SEASONS[0], n_train - n_valid), ("train", TRAIN_SEASONS[1], n_valid)]
    counts.append(("test", TEST_SEASONS[0], n_test))

    plans: list[_SeqPlan] = []
    for split, season, count in counts:
        if count == 0:
            continue
        labels = _season_labels(rng, count, species)
        night = _stratified_flags(rng, count, NIGHT_FRACTION)
        site_idx = rng.permutation(np.arange(count) % len(sites))
        frames = rng.choice(len(_FRAME_COUNT_P), size=count, p=_FRAME_COUNT_P) + 1
        days = rng.integers(0, _SEASON_DAYS, size=count)
        day_secs = rng.integers(int(6.5 * 3600), int(18.5 * 3600), size=count)
        night_secs = rng.integers(19 * 3600, int(29.5 * 3600), size=count)  # 19:00 to 05:30 next day
        seeds = rng.integers(0, 2**63 - 1, size=count)
        season_plans = []
        for i in range(count):
            secs = int(night_secs[i] if night[i] else day_secs[i])
            start = _SEASON_START[season] + dt.timedelta(days=int(days[i]), seconds=secs)
            season_plans.append(
                _SeqPlan(
                    split=split,
                    season=season,
                    site=sites[int(site_idx[i])],
                    start=start,
                    num_frames=int(frames[i]),
                    labels=labels[i],
                    night=bool(night[i]),
                    render_seed=int(seeds[i]),
                )
            )
        _number_captures(season_plans)
        plans.extend(sorted(season_plans, key=lambda p: (p.site.name, p.roll, p.capture)))
    return plans


def _make_sites(rng: np.random.Generator, n: int, sizes: tuple[tuple[int, int], ...]) -> list[_Site]:
    """About one camera per 15 sequences, at least one per image size, at most 24."""
    n_sites = max(len(sizes), min(24, _round(n / 15)))
    grid = [f"{letter}{number:02d}" for letter in _SITE_LETTERS for number in range(1, 14)]
    n_sites = min(n_sites, len(grid))
    names = sorted(grid[i] for i in rng.choice(len(grid), size=n_sites, replace=False))
    size_of = rng.permutation(np.arange(n_sites) % len(sizes))
    night_l = rng.permutation(np.arange(n_sites) % 2 == 0)
    banners = rng.permutation(np.arange(n_sites) % 3)
    layout_seeds = rng.integers(0, 2**63 - 1, size=n_sites)
    return [
        _Site(
            name=names[i],
            size=sizes[int(size_of[i])],
            night_mode="L" if night_l[i] else "RGB",
            banner=int(banners[i]),
            layout_seed=int(layout_seeds[i]),
        )
        for i in range(n_sites)
    ]


def _season_labels(rng: np.random.Generator, n: int, species: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Exact shares rather than coin flips, so every season, even a small one, has the intended mix:
    about 2/3 empty, the species in equal numbers, about 10 % of the animal sequences with two species."""
    n_empty = _round(n * EMPTY_FRACTION) if n > 1 else 0
    n_animal = n - n_empty
    n_two = _round(n_animal * TWO_SPECIES_FRACTION) if len(species) > 1 else 0
    order = rng.permutation(len(species))
    labels: list[tuple[str, ...]] = [(EMPTY,)] * n_empty
    for i in range(n_animal):
        first = species[int(order[i % len(species)])]
        if i < n_two:
            others = [s for s in species if s != first]
            second = others[int(rng.integers(len(others)))]
            labels.append(tuple(sorted((first, second), key=COMPETITION_CLASSES.index)))
        else:
            labels.append((first,))
    return [labels[int(i)] for i in rng.permutation(n)]


def _stratified_flags(rng: np.random.Generator, n: int, fraction: float) -> np.ndarray:
    flags = np.zeros(n, dtype=bool)
    flags[: _round(n * fraction)] = True
    return rng.permutation(flags)


def _number_captures(plans: list[_SeqPlan]) -> None:
    """Per site, in time order: no overlap, roll 1 then 2 (cards were swapped mid-season), capture
    numbers from 1 within a roll and PICT numbers running over the frames of a roll."""
    by_site: dict[str, list[_SeqPlan]] = {}
    for p in plans:
        by_site.setdefault(p.site.name, []).append(p)
    for site_plans in by_site.values():
        site_plans.sort(key=lambda p: p.start)
        for prev, cur in itertools.pairwise(site_plans):
            earliest = prev.start + dt.timedelta(seconds=prev.num_frames + 60)
            cur.start = max(cur.start, earliest)
        first_roll_count = len(site_plans) if len(site_plans) < 4 else math.ceil(len(site_plans) / 2)
        pict = {1: 1, 2: 1}
        capture = {1: 0, 2: 0}
        for i, p in enumerate(site_plans):
            p.roll = 1 if i < first_roll_count else 2
            capture[p.roll] += 1
            p.capture = capture[p.roll]
            p.first_pict = pict[p.roll]
            pict[p.roll] += p.num_frames


# --------------------------------------------------------------------------------------------------
# CSV files


def _write_rows(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_metadata(path: Path, plans: list[_SeqPlan]) -> None:
    rows = [[p.seq_id, name, when] for p in plans for name, when in zip(p.file_names(), p.datetimes())]
    _write_rows(path, [SEQ_ID, FILE_NAME, DATETIME], rows)


def _write_labels(path: Path, plans: list[_SeqPlan]) -> None:
    rows = [[p.seq_id] + ["1" if c in p.labels else "0" for c in COMPETITION_CLASSES] for p in plans]
    _write_rows(path, [SEQ_ID, *COMPETITION_CLASSES], rows)


def _write_submission_format(path: Path, plans: list[_SeqPlan]) -> None:
    rows = [[p.seq_id] + ["0.0"] * len(COMPETITION_CLASSES) for p in plans]
    _write_rows(path, [SEQ_ID, *COMPETITION_CLASSES], rows)


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


def _ellipse_weight(img: np.ndarray, cx: float, cy: float, rx: float, ry: float, soft: float = 0.0):
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


def _paint_ellipse(img, cx, cy, rx, ry, colour, soft: float = 0.0, texture: float = 0.0, rng=None) -> None:
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


def _shade_ellipse(img: np.ndarray, cx: float, cy: float, rx: float, ry: float, strength: float) -> None:
    """Darken softly (any dtype): the shadow under an animal."""
    region, weight = _ellipse_weight(img, cx, cy, rx, ry, soft=1.0)
    if region is None:
        return
    factor = 1.0 - strength * weight
    shaded = img[region] * (factor[..., None] if img.ndim == 3 else factor)
    img[region] = shaded + 0.5 if img.dtype == np.uint8 else shaded


def _paint_capsule(img, x0, y0, x1, y1, r, colour) -> None:
    """A thick line with round ends: tree trunks and branches."""
    h, w = img.shape[:2]
    box = _box((x0 + x1) / 2, (y0 + y1) / 2, abs(x1 - x0) / 2 + r, abs(y1 - y0) / 2 + r, w, h)
    if box is None:
        return
    bx0, by0, bx1, by1 = box
    px = np.arange(bx0, bx1, dtype=np.float32)[None, :] + 0.5
    py = np.arange(by0, by1, dtype=np.float32)[:, None] + 0.5
    mask = _capsule_mask(px, py, x0, y0, x1, y1, r)
    patch = img[by0:by1, bx0:bx1]
    patch[mask] = np.asarray(colour, dtype=np.float32)


def _capsule_mask(px, py, x0, y0, x1, y1, r) -> np.ndarray:
    dx, dy = x1 - x0, y1 - y0
    length2 = max(dx * dx + dy * dy, 1e-12)
    qx, qy = px - x0, py - y0
    t = np.clip((qx * dx + qy * dy) / length2, 0.0, 1.0)
    return (qx - t * dx) ** 2 + (qy - t * dy) ** 2 <= r * r


# --------------------------------------------------------------------------------------------------
# Scenes. The camera's view (horizon, trees, rocks) belongs to the site; light, sky, grass and grain
# change with every sequence, like real captures of one camera across days.


@dataclass(frozen=True)
class _Layout:
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


def _site_layout(site: _Site) -> _Layout:
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
    return _Layout(
        horizon_x=np.linspace(0.0, 1.0, n_ctrl),
        horizon_y=horizon_y,
        ground_far=np.asarray(far, dtype=np.float32),
        ground_near=np.asarray(near, dtype=np.float32),
        trees=trees,
        rocks=rocks,
        bushes=bushes,
    )


def _draw_scene(
    layout: _Layout, rng: np.random.Generator, w: int, h: int, night_gain: float | None
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
        img *= np.float32(255.0 * rng.uniform(0.85, 1.1))  # time of day, cloud cover
    img += 0.5
    np.clip(img, 0, 255, out=img)
    pixels = img.astype(np.uint8)
    if (dw, dh) != (w, h):
        pixels = np.asarray(Image.fromarray(pixels).resize((w, h), Image.Resampling.BILINEAR))
    return pixels, horizon


def _draw_day(layout: _Layout, rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
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


def _flash(x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray | float:
    """Light of the infrared flash at (x, y), fractions of the frame: strong at the bottom centre,
    gone by the horizon, like the real night frames of Snapshot Serengeti."""
    return np.clip(1.3 - ((x - 0.5) / 0.7) ** 2 - ((y - 1.0) / 0.62) ** 2, 0.04, 1.1)


def _to_night(img: np.ndarray, horizon: np.ndarray, rng: np.random.Generator, gain: float) -> np.ndarray:
    """Infrared flash look, (H, W): gray, black sky, a bright foreground fading out, heavy grain."""
    h, w = img.shape[:2]
    lum = img @ _LUMA
    ys = (np.arange(h, dtype=np.float32) + 0.5) / h
    xs = (np.arange(w, dtype=np.float32) + 0.5) / w
    light = _flash(xs[None, :], ys[:, None]).astype(np.float32) * np.float32(gain)
    sky = ys[:, None] < horizon[None, :]
    gray = np.where(sky, np.float32(0.02), lum * light)
    gray += rng.standard_normal((h, w), dtype=np.float32) * np.float32(0.03)
    return gray


def _draw_banner(frame: np.ndarray, rng: np.random.Generator, site: _Site) -> None:
    """The camera's info strip along the bottom: brand on the left (fixed per camera), date and time
    on the right (new per frame). Glyphs are random blocks; what matters is a high-contrast band that
    carries no label information, as on the real cameras."""
    h, w = frame.shape[:2]
    bh = max(6, _round(0.04 * h))
    ink, paper = (242, 5) if site.banner == 1 else (5, 247)
    frame[h - bh :] = paper
    ry = max(1, _round(bh * 0.6 / 5))
    rx = max(1, ry)
    brand_rng = np.random.default_rng(site.layout_seed)
    for n_chars, right in ((12, False), (19, True)):
        glyphs = (rng if right else brand_rng).random((5, n_chars, 4)) < 0.55
        glyphs[:, :, 3] = False  # the gap between characters
        text = glyphs.reshape(5, n_chars * 4).repeat(ry, axis=0).repeat(rx, axis=1)
        th, tw = text.shape
        y0 = h - bh + max(0, (bh - th) // 2)
        x0 = w - tw - bh // 2 if right else bh // 2
        x0, x1 = max(0, x0), min(w, x0 + tw)
        y1 = min(h, y0 + th)
        region = frame[y0:y1, x0:x1]
        region[text[: y1 - y0, : x1 - x0]] = ink


# --------------------------------------------------------------------------------------------------
# Animals. Each species is a set of ellipses ("e") and capsules ("s") in its own units (x towards the
# head, y down), painted with a coat pattern. Parts: body (patterned), shade (body, darker), accent
# (mane, tail tuft, beard), horn (horns, tusks, ossicones).

_BODY, _SHADE, _ACCENT, _HORN = 1, 2, 3, 4
_Shape = tuple


def _ell(part: int, cx: float, cy: float, rx: float, ry: float) -> _Shape:
    return ("e", part, cx, cy, rx, ry)


def _seg(part: int, x0: float, y0: float, x1: float, y1: float, r: float) -> _Shape:
    return ("s", part, x0, y0, x1, y1, r)


def _poly(part: int, points: Sequence[tuple[float, float]], r: float) -> list[_Shape]:
    return [_seg(part, *a, *b, r) for a, b in itertools.pairwise(points)]


def _legs(xs: Sequence[float], top: float, bottom: float, r: float, part: int = _BODY) -> list[_Shape]:
    # Far legs (odd positions) a little shorter and darker: a hint of depth.
    shapes = []
    for i, x in enumerate(xs):
        far = i % 2 == 1
        shapes.append(_seg(_SHADE if far else part, x, top, x + 0.02, bottom - (0.03 if far else 0.0), r))
    return shapes


@dataclass(frozen=True)
class _Style:
    shapes: tuple[_Shape, ...]
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


def _zebra() -> _Style:
    shapes = [
        _seg(_BODY, -0.5, -0.08, -0.62, 0.35, 0.025), _seg(_ACCENT, -0.62, 0.3, -0.63, 0.43, 0.04),
        *_legs((-0.38, -0.28, 0.28, 0.38), 0.05, 0.72, 0.045),
        _ell(_BODY, 0.0, 0.0, 0.5, 0.22), _ell(_BODY, -0.32, -0.02, 0.2, 0.21), _ell(_BODY, 0.3, 0.0, 0.2, 0.21),
        _seg(_BODY, 0.38, -0.08, 0.6, -0.42, 0.1), _seg(_BODY, 0.6, -0.45, 0.8, -0.2, 0.07),
        _seg(_BODY, 0.58, -0.5, 0.55, -0.62, 0.025), _seg(_ACCENT, 0.33, -0.22, 0.56, -0.56, 0.035),
        _ell(_ACCENT, 0.8, -0.2, 0.06, 0.05),
    ]  # fmt: skip
    return _Style(
        tuple(shapes), "stripes", main=(0.94, 0.93, 0.9), second=(0.06, 0.06, 0.07), freq=7.0, marks=(0.16,)
    )


def _wildebeest() -> _Style:
    shapes = [
        _seg(_ACCENT, -0.48, -0.08, -0.58, 0.38, 0.035),
        *_legs((-0.35, -0.25, 0.25, 0.35), 0.05, 0.7, 0.036),
        _ell(_BODY, 0.0, 0.0, 0.48, 0.2), _ell(_BODY, 0.25, -0.08, 0.26, 0.25),
        _seg(_BODY, 0.35, -0.08, 0.55, -0.18, 0.13), _seg(_BODY, 0.55, -0.22, 0.72, 0.15, 0.075),
        _seg(_ACCENT, 0.44, 0.02, 0.56, 0.22, 0.045), _seg(_ACCENT, 0.12, -0.32, 0.5, -0.3, 0.045),
        *_poly(_HORN, [(0.5, -0.26), (0.4, -0.36), (0.47, -0.46)], 0.028),
        *_poly(_HORN, [(0.6, -0.26), (0.7, -0.36), (0.64, -0.46)], 0.028),
    ]  # fmt: skip
    return _Style(tuple(shapes), "brindled", main=(0.26, 0.27, 0.31), second=(0.14, 0.14, 0.16), freq=6.0)


def _gazellethomsons() -> _Style:
    shapes = [
        _seg(_ACCENT, -0.38, -0.05, -0.46, 0.1, 0.035),
        *_legs((-0.27, -0.2, 0.22, 0.29), 0.05, 0.6, 0.03),
        _ell(_BODY, 0.0, 0.0, 0.38, 0.19), _seg(_BODY, 0.28, -0.05, 0.5, -0.38, 0.07),
        _seg(_BODY, 0.5, -0.42, 0.68, -0.32, 0.055), _seg(_BODY, 0.5, -0.45, 0.43, -0.56, 0.026),
        _seg(_HORN, 0.52, -0.46, 0.44, -0.74, 0.018), _seg(_HORN, 0.56, -0.46, 0.49, -0.73, 0.018),
    ]  # fmt: skip
    return _Style(
        tuple(shapes), "side_stripe", main=(0.9, 0.76, 0.5), second=(0.06, 0.05, 0.04), belly=(0.98, 0.97, 0.94),
        marks=(-0.04, 0.06, 0.2),
    )  # fmt: skip


def _elephant() -> _Style:
    shapes = [
        _seg(_BODY, -0.5, -0.1, -0.56, 0.3, 0.02),
        *_legs((-0.32, -0.2, 0.2, 0.32), 0.1, 0.75, 0.085),
        _ell(_BODY, 0.0, 0.0, 0.5, 0.34), _ell(_BODY, 0.5, -0.12, 0.2, 0.22),
        *_poly(_BODY, [(0.62, -0.02), (0.68, 0.3), (0.66, 0.6), (0.72, 0.68)], 0.055),
        _ell(_SHADE, 0.36, -0.08, 0.17, 0.25),
        *_poly(_HORN, [(0.6, 0.05), (0.7, 0.18), (0.8, 0.2)], 0.024),
    ]  # fmt: skip
    return _Style(tuple(shapes), "wrinkled", main=(0.57, 0.53, 0.49), horn=(0.93, 0.9, 0.8), freq=14.0)


def _giraffe() -> _Style:
    shapes = [
        _seg(_BODY, -0.38, 0.0, -0.45, 0.45, 0.018), _seg(_ACCENT, -0.45, 0.42, -0.46, 0.52, 0.03),
        *_legs((-0.3, -0.2, 0.22, 0.32), 0.05, 1.05, 0.045),
        _ell(_BODY, -0.15, 0.03, 0.25, 0.16), _ell(_BODY, 0.15, -0.04, 0.27, 0.2),
        _seg(_BODY, 0.28, -0.1, 0.62, -0.95, 0.1), _seg(_ACCENT, 0.22, -0.16, 0.56, -0.98, 0.025),
        _seg(_BODY, 0.6, -0.98, 0.8, -0.9, 0.055),
        _seg(_HORN, 0.6, -1.02, 0.59, -1.12, 0.017), _seg(_HORN, 0.64, -1.02, 0.64, -1.12, 0.017),
    ]  # fmt: skip
    return _Style(
        tuple(shapes), "reticulated", main=(0.96, 0.92, 0.78), second=(0.5, 0.26, 0.1), accent=(0.35, 0.2, 0.1),
        horn=(0.35, 0.22, 0.12), freq=4.5, marks=(0.75,),
    )  # fmt: skip


def _impala() -> _Style:
    shapes = [
        _seg(_ACCENT, -0.44, -0.05, -0.52, 0.12, 0.03),
        *_legs((-0.32, -0.23, 0.24, 0.33), 0.05, 0.9, 0.03),
        _ell(_BODY, 0.0, 0.0, 0.44, 0.18), _seg(_BODY, 0.3, -0.05, 0.52, -0.38, 0.075),
        _seg(_BODY, 0.52, -0.42, 0.7, -0.3, 0.058), _seg(_BODY, 0.52, -0.46, 0.44, -0.56, 0.028),
        *_poly(_HORN, [(0.53, -0.46), (0.46, -0.62), (0.53, -0.78), (0.48, -0.9)], 0.02),
    ]  # fmt: skip
    return _Style(
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
_BIRDS = frozenset({"guineafowl", "koribustard", "ostrich", "otherbird", "secretarybird", "vulture"})


def _style_for(name: str) -> _Style:
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
    pattern = ("plain", "spots", "stripes", "two_tone", "brindled")[int(g.integers(5))]
    marks = (0.5 * ry,) if pattern == "stripes" else (-0.3 * ry, 0.5 * ry, ry)
    return _Style(shapes, pattern, main=main, second=second, freq=float(g.uniform(5, 10)), marks=marks)


def _quadruped_shapes(g: np.random.Generator) -> tuple[tuple[_Shape, ...], float]:
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
        _seg(_BODY, -0.95 * rx, -0.2 * ry, -rx - 0.1, g.uniform(0.05, 0.4), 0.025),
        *_legs((-0.7 * rx, -0.5 * rx, 0.5 * rx, 0.7 * rx), 0.3 * ry, 0.5 * ry + leg_len, leg_r),
        _ell(_BODY, 0.0, 0.0, rx, ry),
        _seg(_BODY, nx0, ny0, nx1, ny1, neck_r),
        _seg(_BODY, nx1, ny1, hx1, hy1, head_r),
    ]
    if g.random() < 0.5:
        shapes += _poly(_HORN, [(nx1, ny1 - head_r), (nx1 - 0.05, ny1 - head_r - 0.15)], 0.02)
    return tuple(shapes), ry


def _bird_shapes(g: np.random.Generator) -> tuple[tuple[_Shape, ...], float]:
    rx, ry = g.uniform(0.25, 0.4), g.uniform(0.15, 0.25)
    leg_len, neck_len = g.uniform(0.15, 0.9), g.uniform(0.05, 0.8)
    head = (0.8 * rx + 0.1, -ry - neck_len)
    shapes = (
        _seg(_SHADE, -0.02, 0.5 * ry, -0.02, 0.6 * ry + leg_len, 0.02),
        _seg(_BODY, 0.04, 0.5 * ry, 0.06, 0.6 * ry + leg_len, 0.02),
        _ell(_BODY, 0.0, 0.0, rx, ry),
        _seg(_SHADE, -rx * 0.9, -0.1 * ry, -rx * 1.3, 0.3 * ry, 0.06),  # tail feathers
        _seg(_BODY, 0.7 * rx, -0.4 * ry, *head, 0.035),
        _ell(_BODY, head[0], head[1], 0.06, 0.05),
        _seg(_HORN, head[0] + 0.04, head[1], head[0] + 0.13, head[1] + 0.03, 0.015),  # beak
    )
    return shapes, ry


def _mix(a: Sequence[float], b: Sequence[float], t: np.ndarray) -> np.ndarray:
    a_ = np.asarray(a, dtype=np.float32)
    b_ = np.asarray(b, dtype=np.float32)
    return a_ + (b_ - a_) * t.astype(np.float32)[..., None]


def _coat(style: _Style, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Body colour (H, W, 3) over the shape grid: X is (1, W), Y is (H, 1), in shape units."""
    f, tau = style.freq, 2 * math.pi
    shape = np.broadcast_shapes(X.shape, Y.shape)
    zeros = np.zeros(shape, dtype=np.float32)
    if style.pattern == "stripes":
        body = np.sin(tau * f * (X + 0.12 * np.sin(4.0 * Y)))
        legs = np.sin(tau * f * 1.4 * Y)
        leg_top = style.marks[0] if style.marks else 0.16
        s = np.where(Y > leg_top, legs, body)
        return _mix(style.main, style.second, np.clip(0.5 + 2.5 * s, 0, 1))
    if style.pattern == "reticulated":
        wx = X + 0.05 * np.sin(tau * 2.5 * Y)
        wy = Y + 0.05 * np.sin(tau * 2.5 * X)
        line = np.minimum(np.abs(np.sin(math.pi * f * wx)), np.abs(np.sin(math.pi * f * wy)))
        patch = np.clip((line - 0.2) * 6.0, 0, 1)
        if style.marks:
            patch = np.where(Y > style.marks[0], 0.0, patch)
        return _mix(style.main, style.second, patch)
    if style.pattern == "spots":
        wx = X + 0.04 * np.sin(tau * 3 * Y)
        dots = np.cos(tau * f * wx) * np.cos(tau * f * Y) > 0.6
        return _mix(style.main, style.second, dots + zeros)
    if style.pattern == "side_stripe":
        band_top, belly_top, leg_top = style.marks
        t = np.where((Y > band_top) & (Y <= belly_top), 1.0, 0.0) + zeros
        out = _mix(style.main, style.second, t)
        belly = (Y > belly_top) & (Y <= leg_top) & (np.abs(X) < 0.45)
        out[np.broadcast_to(belly, shape)] = style.belly
        return out
    if style.pattern == "two_tone":
        back_bottom, belly_top, leg_top = style.marks[:3]
        t = np.clip((back_bottom - Y) * 12.0 + 0.5, 0, 1) + zeros
        out = _mix(style.main, style.second, t)
        belly = (Y > belly_top) & (Y <= leg_top) & (np.abs(X) < 0.45)
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
    style: _Style, height: int, stretch: float, rng: np.random.Generator
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
            m = _capsule_mask(X[:, j0:j1], Y[i0:i1], x0, y0, x1, y1, r)
        part[i0:i1, j0:j1][m] = pid

    rgb = _coat(style, X, Y)
    rgb[part == _SHADE] *= 0.72
    rgb[part == _ACCENT] = style.accent
    rgb[part == _HORN] = style.horn
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
    a = max(0, math.floor((lo - origin) * scale) - 1)
    b = min(n, math.ceil((hi - origin) * scale) + 1)
    return a, b


@dataclass
class _Animal:
    rgb: np.ndarray  # 0-255 floats, (h, w, 3) by day, (h, w) at night
    alpha: np.ndarray
    centre_x: list[float]  # per frame, pixels
    bottom_y: list[float]


def _place_animals(
    labels: tuple[str, ...],
    styles: dict[str, _Style],
    rng: np.random.Generator,
    w: int,
    h: int,
    horizon: np.ndarray,
    num_frames: int,
    night_gain: float | None,
) -> list[_Animal]:
    """Animals of a sequence: size by distance (small near the horizon), a heading and a walk."""
    if labels == (EMPTY,):
        return []
    animals = []
    ground_top = float(horizon.max()) + 0.04
    for name in labels:
        herd = 1 + int(rng.choice(len(_HERD_P), p=_HERD_P)) if len(labels) == 1 else 1
        for _ in range(herd):
            near = float(rng.uniform(0.0, 1.0))  # 0: at the horizon, 1: at the camera
            scale = float(
                np.clip(
                    _SCALE_RANGE[0] + near * (_SCALE_RANGE[1] - _SCALE_RANGE[0]) + rng.normal(0, 0.03),
                    *_SCALE_RANGE,
                )
            )
            ah = max(4, _round(scale * h))
            bottom = max(ground_top * h + near * (0.97 - ground_top) * h, 0.9 * ah)
            rgb, alpha = _render_animal(styles[name], ah, float(rng.uniform(0.9, 1.1)), rng)
            facing = 1 if rng.random() < 0.5 else -1
            if facing < 0:
                rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
            aw = alpha.shape[1]
            x = float(rng.uniform(0.3 * aw, max(0.3 * aw + 1, w - 0.3 * aw)))
            speed = float(rng.uniform(0.0, 0.06)) * w * facing
            drift = float(rng.normal(0, 0.005)) * h
            xs = [float(np.clip(x + k * speed, 0, w)) for k in range(num_frames)]
            ys = [bottom + k * drift for k in range(num_frames)]
            if night_gain is not None:  # infrared: fur reflects; lit like the ground it stands on
                light = min(1.0, float(_flash(x / w, (bottom - 0.3 * ah) / h)) * night_gain)
                rgb = np.clip((rgb @ _LUMA) * 0.9 + 0.12, 0, 1) * light
            rgb = np.ascontiguousarray(rgb * np.float32(255.0))
            animals.append(_Animal(rgb, np.ascontiguousarray(alpha), xs, ys))
    return sorted(animals, key=lambda a: a.bottom_y[0])  # far ones first


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


# --------------------------------------------------------------------------------------------------
# One sequence: scene once, then each frame with the animals where they walked to.


def _render_sequence(plan: _SeqPlan, styles: dict[str, _Style], images_dir: Path) -> None:
    rng = np.random.default_rng(plan.render_seed)
    w, h = plan.site.size
    night_gain = float(rng.uniform(0.8, 1.05)) if plan.night else None
    scene, horizon = _draw_scene(_site_layout(plan.site), rng, w, h, night_gain)
    animals = _place_animals(plan.labels, styles, rng, w, h, horizon, plan.num_frames, night_gain)

    for k, name in enumerate(plan.file_names()):
        frame = scene.copy()
        for a in animals:
            ah, aw = a.alpha.shape
            cx, by = a.centre_x[k], a.bottom_y[k]
            _shade_ellipse(frame, cx, by - 0.02 * ah, 0.45 * aw, 0.06 * ah, 0.35)
            _composite(frame, a.rgb, a.alpha, _round(cx - aw / 2), _round(by - ah))
        if plan.site.banner:
            _draw_banner(frame, rng, plan.site)
        exposure = float(rng.normal(1.0, 0.015))  # auto-exposure: no two shots are byte-identical
        _save_jpeg(
            frame, images_dir / name, exposure, grayscale_rgb=plan.night and plan.site.night_mode == "RGB"
        )


def _save_jpeg(pixels: np.ndarray, path: Path, exposure: float, grayscale_rgb: bool) -> None:
    """Fixed encoder settings and no EXIF: the bytes depend on the pixels only."""
    if pixels.ndim == 2 and grayscale_rgb:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    lut = np.clip(np.arange(256) * exposure + 0.5, 0, 255).astype(np.uint8).tolist()
    image = image.point(lut * len(image.getbands()))
    options = {"quality": JPEG_QUALITY, "optimize": False, "progressive": False}
    if image.mode == "RGB":
        options["subsampling"] = 2  # 4:2:0
    with open(path, "wb") as f:
        image.save(f, format="JPEG", **options)
