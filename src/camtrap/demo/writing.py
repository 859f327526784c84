"""Writing a demo dataset: the JPEGs of every sequence and the five CSV files of the competition.

Why the bytes are fixed: the output is a pure function of the arguments, so tests can compare files and
a dataset can be regenerated instead of stored. The plan comes from one ``numpy.random.default_rng``
stream, the pixels of each sequence from its own seed (so worker processes cannot change them), JPEGs
are written with fixed settings and no EXIF, and no clock is read.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from camtrap.data.classes import COMPETITION_CLASSES, DATETIME, EMPTY, FILE_NAME, SEQ_ID
from camtrap.demo.animals import draw_animals, place_animals
from camtrap.demo.planning import (
    DEFAULT_SIZES,
    DEFAULT_SPECIES,
    TEST_SEASONS,
    TRAIN_SEASONS,
    SequencePlan,
    plan_sequences,
    validate_sizes,
    validate_species,
)
from camtrap.demo.scenes import draw_banner, draw_scene, site_layout
from camtrap.demo.species import Style, style_for

JPEG_QUALITY = 88
_JPEG_SUBSAMPLING_420 = 2  # PIL's code for 4:2:0 chroma subsampling, as camera JPEGs use
_NIGHT_GAIN_RANGE = (0.8, 1.05)  # strength of the infrared flash, per sequence
_EXPOSURE_JITTER = 0.015  # auto-exposure: no two shots are byte-identical
_CHUNKS_PER_WORKER = 4  # a few chunks per worker, so a slow one does not hold up the end


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
    names = validate_species(DEFAULT_SPECIES if species is None else species)
    sizes = validate_sizes(image_sizes)
    if int(num_sequences) < 1:
        raise ValueError(f"num_sequences must be at least 1, got {num_sequences}")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")

    out = Path(out_dir)
    images_dir = out / "images"
    plans = plan_sequences(int(num_sequences), int(seed), names, sizes, float(test_fraction))
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


def _render_all(
    plans: list[SequencePlan], species: tuple[str, ...], images_dir: Path, num_workers: int
) -> None:
    """Every sequence's JPEGs, here or in ``num_workers`` processes: the bytes are the same either way."""
    if num_workers <= 1 or len(plans) < 2:
        _render_chunk(plans, species, images_dir)
        return
    # Contiguous chunks: one site's sequences are neighbours in plan order, so each worker makes few
    # directories.
    n_chunks = min(len(plans), num_workers * _CHUNKS_PER_WORKER)
    bounds = np.linspace(0, len(plans), n_chunks + 1).astype(int)
    chunks = [plans[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    with ProcessPoolExecutor(max_workers=num_workers) as pool:
        for _ in pool.map(_render_chunk, chunks, [species] * len(chunks), [images_dir] * len(chunks)):
            pass  # drain the results, so that an error in a worker is raised here


def _render_chunk(plans: list[SequencePlan], species: tuple[str, ...], images_dir: Path) -> None:
    """Render some sequences in this process; top level, so a worker process can unpickle it."""
    styles = {name: style_for(name) for name in species}
    for plan in plans:
        _render_sequence(plan, styles, images_dir)


def _render_sequence(plan: SequencePlan, styles: dict[str, Style], images_dir: Path) -> None:
    """The scene once, then each frame with the animals where they walked to; one generator, in order."""
    rng = np.random.default_rng(plan.render_seed)
    w, h = plan.site.size
    night_gain = float(rng.uniform(*_NIGHT_GAIN_RANGE)) if plan.night else None
    scene, horizon = draw_scene(site_layout(plan.site), rng, w, h, night_gain)
    animals = place_animals(plan.labels, styles, rng, w, h, horizon, plan.num_frames, night_gain)

    for k, name in enumerate(plan.file_names()):
        frame = scene.copy()
        draw_animals(frame, animals, k)
        if plan.site.banner:
            draw_banner(frame, rng, plan.site)
        exposure = float(rng.normal(1.0, _EXPOSURE_JITTER))
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
        options["subsampling"] = _JPEG_SUBSAMPLING_420
    with open(path, "wb") as f:
        image.save(f, format="JPEG", **options)


def _write_rows(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """UTF-8 and Unix line ends on every platform: the same bytes everywhere."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_metadata(path: Path, plans: list[SequencePlan]) -> None:
    rows = [[p.seq_id, name, when] for p in plans for name, when in zip(p.file_names(), p.datetimes())]
    _write_rows(path, [SEQ_ID, FILE_NAME, DATETIME], rows)


def _write_labels(path: Path, plans: list[SequencePlan]) -> None:
    rows = [[p.seq_id] + ["1" if c in p.labels else "0" for c in COMPETITION_CLASSES] for p in plans]
    _write_rows(path, [SEQ_ID, *COMPETITION_CLASSES], rows)


def _write_submission_format(path: Path, plans: list[SequencePlan]) -> None:
    rows = [[p.seq_id] + ["0.0"] * len(COMPETITION_CLASSES) for p in plans]
    _write_rows(path, [SEQ_ID, *COMPETITION_CLASSES], rows)
