"""What every output format is written from: a scored season, and the rules they share.

Scoring ends with one probability row per sequence (flip TTA and the geometric means already applied,
:mod:`camtrap.infer.submission`) and one outcome per image. The field formats (:mod:`.table`,
:mod:`.camtrap_dp`, :mod:`.megadetector`) read only this, so they agree with each other and with the
competition submission on every number, and each accounts for every image and every sequence.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from functools import cached_property

import pandas as pd

from camtrap.data.classes import DATETIME, FILE_NAME, SEQ_ID
from camtrap.data.frames import ERROR
from camtrap.data.sequences import CAMERA, DATETIME_FORMAT, parse_exif_datetime
from camtrap.errors import InputError

#: The failure reason of a sequence with no usable image (the failed sequences table's column).
REASON = "reason"


_OFFSET = re.compile(r"^[+-](0\d|1[0-4]):[0-5]\d$")


def parse_utc_offset(text: str) -> dt.timezone:
    """``+HH:MM``/``-HH:MM`` (or ``Z``) as a timezone; ``InputError`` otherwise."""
    text = text.strip()
    if text in ("Z", "z"):
        return dt.timezone.utc
    if not _OFFSET.match(text):
        raise InputError(f"--utc-offset {text!r}: expected +HH:MM or -HH:MM (e.g. +03:00 for East Africa)")
    sign = 1 if text[0] == "+" else -1
    return dt.timezone(sign * dt.timedelta(hours=int(text[1:3]), minutes=int(text[4:6])))


@dataclass(frozen=True)
class ExportSettings:
    """Choices of the field formats; see ``predict.py --help`` for each."""

    #: A class at or above this sequence probability is reported as present (multi-label).
    threshold: float = 0.5
    #: How many classes each sequence lists with their probabilities.
    top_k: int = 3
    #: Class -> taxon CSV (None: the packaged Snapshot Serengeti list; see :mod:`camtrap.export.taxa`).
    taxa: str | None = None
    #: Camtrap DP deployments CSV with the facts a classifier cannot know (coordinates, setup), by deploymentID.
    deployments: str | None = None
    #: JSON merged into Camtrap DP's datapackage.json (project, contributors, licences, ...).
    package_metadata: str | None = None
    #: The cameras' clock offset from UTC: EXIF times carry no time zone.
    utc_offset: str = "+00:00"

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise InputError(f"--threshold {self.threshold}: expected a probability in (0, 1]")
        if self.top_k < 1:
            raise InputError(f"top_k must be at least 1, got {self.top_k}")
        parse_utc_offset(self.utc_offset)


@dataclass
class ScoredSeason:
    """A scored season: sequence probabilities, every image's outcome, and what produced them."""

    classes: list[str]
    #: One row per sequence (output order), indexed by seq_id, one probability column per class.
    sequences: pd.DataFrame
    #: One row per input image: seq_id, file_name, datetime, camera, error ("" when scored).
    images: pd.DataFrame
    #: Sequences with no usable image: seq_id, reason. They still appear in every output.
    failed: pd.DataFrame
    #: Each model's metadata (path, sha256, recipe, ...), as :func:`camtrap.model_file.model_metadata` reads it.
    models: list[dict]
    images_dir: str
    #: When scoring finished (UTC): the classification timestamp of every record.
    finished: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).replace(microsecond=0))

    def __post_init__(self) -> None:
        missing = set(self.images[SEQ_ID]) - set(self.sequences.index)
        if missing:  # never silently: an image whose sequence has no row would vanish from every format
            raise ValueError(f"{len(missing)} sequences of the images have no probabilities, e.g. {sorted(missing)[:3]}")

    @property
    def classifier(self) -> str:
        """Who classified: each model's recipe and content hash (an ensemble joins them with ' + ')."""
        names = [f"camtrap {m.get('recipe', {}).get('name', 'model')} {m['sha256'][:12]}" for m in self.models]
        return " + ".join(names)

    @cached_property
    def times(self) -> pd.Series:
        """Each image's capture time (NaT where the metadata has none), parsed once for every format."""
        cache = {text: parse_capture_time(text) for text in self.images[DATETIME].unique()}
        return pd.to_datetime(self.images[DATETIME].map(cache), errors="coerce")

    def failure_of(self) -> dict[str, str]:
        """seq_id -> why the sequence has no prediction (only sequences with no usable image)."""
        return dict(zip(self.failed[SEQ_ID], self.failed[REASON]))


def sequence_labels(probs: pd.Series, observation_types: pd.Series, threshold: float) -> list[str]:
    """The classes a sequence is reported as: every non-blank class at or above ``threshold`` (best first).

    When none reaches it, the single most probable class (blank included): every sequence gets a best
    guess, and its probability says how sure it is. ``observation_types`` maps class -> Camtrap DP type.
    """
    ordered = probs.sort_values(ascending=False, kind="stable")
    present = [c for c, p in ordered.items() if p >= threshold and observation_types[c] != "blank"]
    return present or [str(ordered.index[0])]


def top_classes(probs: pd.Series, k: int) -> list[tuple[str, float]]:
    """The ``k`` most probable classes, best first."""
    ordered = probs.sort_values(ascending=False, kind="stable").iloc[:k]
    return [(str(c), float(p)) for c, p in ordered.items()]


def parse_capture_time(text: str) -> dt.datetime | None:
    """A metadata datetime (ISO 8601 or EXIF's ``YYYY:MM:DD HH:MM:SS``) as naive camera time; None if absent/bad."""
    text = str(text).strip()
    if not text:
        return None
    for parse in (dt.datetime.fromisoformat, parse_exif_datetime):
        try:
            return parse(text).replace(tzinfo=None)
        except ValueError:
            continue
    return None


def sequence_spans(images: pd.DataFrame, times: pd.Series) -> pd.DataFrame:
    """Per seq_id: first and last capture time (NaT when no frame has one), images and failed images."""
    frame = images.assign(_t=times.to_numpy(), _failed=(images[ERROR] != "").to_numpy())
    grouped = frame.groupby(SEQ_ID, sort=False)
    return pd.DataFrame({"start": grouped["_t"].min(), "end": grouped["_t"].max(),
                         "images": grouped.size(), "failed_images": grouped["_failed"].sum().astype(int),
                         CAMERA: grouped[CAMERA].first(),
                         "files": grouped[FILE_NAME].agg(";".join)})


def format_time(value: pd.Timestamp | dt.datetime | None) -> str:
    """A naive capture time as the metadata writes it ("" for none)."""
    return "" if value is None or pd.isna(value) else value.strftime(DATETIME_FORMAT)
