"""The plan of a demo dataset: which sequences, where, when, how many frames and with which labels.

Why a plan before any pixel: the CSV files and the image paths follow from the plan alone, and the plan
comes from one ``numpy.random.default_rng(seed)`` stream, so it is cheap, ordered and reproducible.
Each sequence carries its own ``render_seed``; the pixels come later from that seed only, which is what
lets several processes render without changing a byte.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from camtrap.data.classes import COMPETITION_CLASSES, EMPTY
from camtrap.data.sequences import DATETIME_FORMAT

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
_FRAME_INTERVAL_S = 1  # the cameras shoot a burst, one frame a second
_SEQUENCE_GAP_S = 60  # at least this long between the last frame of a sequence and the next one
_DAY_SECONDS = (int(6.5 * 3600), int(18.5 * 3600))  # a day sequence starts 06:30 to 18:30
_NIGHT_SECONDS = (19 * 3600, int(29.5 * 3600))  # a night sequence starts 19:00 to 05:30 next day
_MIN_SIDE = 32
_SEED_HIGH = 2**63 - 1  # render and layout seeds are drawn from [0, _SEED_HIGH): any int64

_SITE_LETTERS = "BCDEFGHIJKLMNOPQRSTUV"  # the Serengeti camera grid: B04, E03, V10, ...
_SITE_NUMBERS = range(1, 14)  # ... 01 to 13 within a letter
_SEQUENCES_PER_SITE = 15  # about one camera per this many sequences
_MAX_SITES = 24
_BANNER_KINDS = 3  # Site.banner: none, black strip, white strip
_MIN_SEQUENCES_FOR_TWO_ROLLS = 4  # a camera with fewer sequences never had its card swapped


def round_half_up(x: float) -> int:
    """Round half up: Python's round() goes to even, which makes counts jump oddly with n."""
    return math.floor(x + 0.5)


def validate_species(species: Sequence[str]) -> tuple[str, ...]:
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


def validate_sizes(image_sizes: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sizes as a tuple of int pairs; a size too small to draw an animal in fails here."""
    sizes = tuple((int(w), int(h)) for w, h in image_sizes)
    if not sizes:
        raise ValueError("image_sizes must hold at least one (width, height)")
    for w, h in sizes:
        if w < _MIN_SIDE or h < _MIN_SIDE:
            raise ValueError(f"image size {w}x{h} is below the minimum side of {_MIN_SIDE} pixels")
    return sizes


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``"2048x1536,1920x1080"`` as validated (width, height) pairs; a malformed item is named."""
    sizes = []
    for item in text.split(","):
        w, sep, h = item.strip().lower().partition("x")
        if not (sep and w.isdigit() and h.isdigit()):
            raise ValueError(f"image size {item.strip()!r} is not WIDTHxHEIGHT (e.g. 2048x1536)")
        sizes.append((int(w), int(h)))
    return validate_sizes(sizes)


@dataclass(frozen=True)
class Site:
    """One camera: its resolution, how it stores night frames and whether it stamps an info strip."""

    name: str
    size: tuple[int, int]
    night_mode: str  # "L" or "RGB"
    banner: int  # 0: none, 1: black strip with white text, 2: white strip with black text
    layout_seed: int  # the view of the camera: horizon, trees, rocks


@dataclass
class SequencePlan:
    """One sequence as the CSV files see it, plus the seed its pixels are drawn from."""

    split: str
    season: str
    site: Site
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
            (self.start + dt.timedelta(seconds=k * _FRAME_INTERVAL_S)).strftime(DATETIME_FORMAT)
            for k in range(self.num_frames)
        ]


def plan_sequences(
    n: int, seed: int, species: tuple[str, ...], sizes: tuple[tuple[int, int], ...], test_fraction: float
) -> list[SequencePlan]:
    """Every sequence's split, season, site, time, frame count and labels, in output order."""
    rng = np.random.default_rng(seed)
    sites = _make_sites(rng, n, sizes)
    n_test = min(n - 1, round_half_up(n * test_fraction)) if n > 1 else 0
    n_train = n - n_test
    n_valid = round_half_up(n_train * _VALIDATION_SHARE) if n_train > 2 else 0
    counts = [("train", TRAIN_SEASONS[0], n_train - n_valid), ("train", TRAIN_SEASONS[1], n_valid)]
    counts.append(("test", TEST_SEASONS[0], n_test))

    plans: list[SequencePlan] = []
    for split, season, count in counts:
        if count == 0:
            continue
        labels = _season_labels(rng, count, species)
        night = _stratified_flags(rng, count, NIGHT_FRACTION)
        site_idx = rng.permutation(np.arange(count) % len(sites))
        frames = rng.choice(len(_FRAME_COUNT_P), size=count, p=_FRAME_COUNT_P) + 1
        days = rng.integers(0, _SEASON_DAYS, size=count)
        day_secs = rng.integers(*_DAY_SECONDS, size=count)
        night_secs = rng.integers(*_NIGHT_SECONDS, size=count)
        seeds = rng.integers(0, _SEED_HIGH, size=count)
        season_plans = []
        for i in range(count):
            secs = int(night_secs[i] if night[i] else day_secs[i])
            start = _SEASON_START[season] + dt.timedelta(days=int(days[i]), seconds=secs)
            season_plans.append(
                SequencePlan(
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


def _make_sites(rng: np.random.Generator, n: int, sizes: tuple[tuple[int, int], ...]) -> list[Site]:
    """About one camera per ``_SEQUENCES_PER_SITE`` sequences, at least one per image size, so every
    size occurs, at most ``_MAX_SITES``."""
    n_sites = max(len(sizes), min(_MAX_SITES, round_half_up(n / _SEQUENCES_PER_SITE)))
    grid = [f"{letter}{number:02d}" for letter in _SITE_LETTERS for number in _SITE_NUMBERS]
    n_sites = min(n_sites, len(grid))
    names = sorted(grid[i] for i in rng.choice(len(grid), size=n_sites, replace=False))
    size_of = rng.permutation(np.arange(n_sites) % len(sizes))
    night_l = rng.permutation(np.arange(n_sites) % 2 == 0)
    banners = rng.permutation(np.arange(n_sites) % _BANNER_KINDS)
    layout_seeds = rng.integers(0, _SEED_HIGH, size=n_sites)
    return [
        Site(
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
    n_empty = round_half_up(n * EMPTY_FRACTION) if n > 1 else 0
    n_animal = n - n_empty
    n_two = round_half_up(n_animal * TWO_SPECIES_FRACTION) if len(species) > 1 else 0
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
    """Exactly ``round(n * fraction)`` flags set, in random places: a share that holds in small seasons."""
    flags = np.zeros(n, dtype=bool)
    flags[: round_half_up(n * fraction)] = True
    return rng.permutation(flags)


def _number_captures(plans: list[SequencePlan]) -> None:
    """Per site, in time order: no overlap, roll 1 then 2 (cards were swapped mid-season), capture
    numbers from 1 within a roll and PICT numbers running over the frames of a roll."""
    by_site: dict[str, list[SequencePlan]] = {}
    for p in plans:
        by_site.setdefault(p.site.name, []).append(p)
    for site_plans in by_site.values():
        site_plans.sort(key=lambda p: p.start)
        for prev, cur in itertools.pairwise(site_plans):
            earliest = prev.start + dt.timedelta(
                seconds=prev.num_frames * _FRAME_INTERVAL_S + _SEQUENCE_GAP_S
            )
            cur.start = max(cur.start, earliest)
        n_site = len(site_plans)
        first_roll_count = n_site if n_site < _MIN_SEQUENCES_FOR_TWO_ROLLS else math.ceil(n_site / 2)
        pict = {1: 1, 2: 1}
        capture = {1: 0, 2: 0}
        for i, p in enumerate(site_plans):
            p.roll = 1 if i < first_roll_count else 2
            capture[p.roll] += 1
            p.capture = capture[p.roll]
            p.first_pict = pict[p.roll]
            pict[p.roll] += p.num_frames
