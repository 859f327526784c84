"""Sequences from a folder of camera-trap images: capture times from EXIF, bursts grouped per camera.

A field card has no metadata CSV: it has JPEGs in a folder per camera. The competition's unit of
prediction is the *sequence* (the frames of one trigger), and scoring aggregates within it by a
geometric mean, which assumes every frame of a sequence shows the same scene. So a folder is turned
into the same ``seq_id, file_name, datetime`` table a metadata CSV gives, plus ``camera`` (:func:`metadata_or_sequences`):

* the images: every ``.jpg``/``.jpeg``/``.png`` (any case) under the folder, recursively;
* the capture time: EXIF ``DateTimeOriginal``, else ``DateTime``; a file with neither (or with a
  malformed value, or unreadable) becomes a sequence of its own, with the reason in ``time_note``;
* the camera: the folder a file sits in, relative to the images folder (``.`` for the top level);
* the sequences: per camera in capture order, a new sequence starts when the gap to the previous
  frame is at least ``gap_s``.

Why :data:`DEFAULT_SEQUENCE_GAP_S` is 10 s: a trigger's frames come in a burst well under two seconds
apart (the real Snapshot Serengeti frames in the test data are 1-2 s apart; EXIF times have 1-s
resolution, so two frames 0.9 s apart can read 1 s), and slower burst settings stay within a few
seconds. The next trigger waits out the camera's re-trigger delay. The rule errs short on purpose:
two triggers wrongly merged let an empty one outvote the animal in the geometric mean, while one
burst wrongly split only loses a little evidence. Cameras set to bursts slower than that need a
larger ``--sequence-gap``.

The table is written as ``sequences.csv`` beside the outputs so a person can review and correct it
and pass it back as ``--metadata``; the id of a sequence is its first frame's file name, so a row
can be found on disk at once.
"""

from __future__ import annotations

import datetime as dt
import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

import pandas as pd
from PIL import Image, UnidentifiedImageError

from camtrap.console import Progress
from camtrap.data import storage
from camtrap.data.classes import DATETIME, FILE_NAME, SEQ_ID
from camtrap.errors import InputError

CAMERA = "camera"
#: Why a file has no capture time (empty when it has one).
TIME_NOTE = "time_note"
#: What ``prepare.py``/``predict.py`` write beside their outputs when they grouped a folder themselves.
SEQUENCES_FILE = "sequences.csv"
SEQUENCE_COLUMNS = [SEQ_ID, FILE_NAME, DATETIME, CAMERA, TIME_NOTE]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_SEQUENCE_GAP_S = 10.0
#: The metadata CSVs' datetime layout (the competition's), also used for the inferred table.
DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_DATETIME = 306
_EXIF_FORMAT = "%Y:%m:%d %H:%M:%S"


def list_images(images_dir: str) -> list[str]:
    """Every image under ``images_dir`` as a sorted relative POSIX path (local folder or URI)."""
    fs, root = storage.get_fs(images_dir)
    if not fs.isdir(root):
        raise InputError(f"{images_dir}: not a folder (give --metadata, or a folder of images)")
    root = root.rstrip("/")
    names = []
    for path in fs.find(root):
        rel = path[len(root) + 1:].replace(os.sep, "/")
        if rel.lower().endswith(IMAGE_SUFFIXES) and not any(p.startswith(".") for p in rel.split("/")):
            names.append(rel)
    return sorted(names)


def parse_exif_datetime(text: str) -> dt.datetime:
    """An EXIF ``YYYY:MM:DD HH:MM:SS`` value; ``ValueError`` names it when malformed (e.g. second 70)."""
    cleaned = str(text).strip().rstrip("\x00").strip()
    try:
        return dt.datetime.strptime(cleaned, _EXIF_FORMAT)
    except ValueError:
        raise ValueError(f"'{cleaned}' is not a valid EXIF time (YYYY:MM:DD HH:MM:SS)") from None


def exif_capture_time(file: BinaryIO) -> tuple[dt.datetime | None, str]:
    """(capture time, note) from an open image file; the note says why there is no time.

    ``DateTimeOriginal`` is when the shutter fired; ``DateTime`` (when the file was last written) is the
    fallback older cameras fill alone. Only the header is parsed: the pixels are never decoded here.
    """
    try:
        exif = Image.open(file).getexif()
    except UnidentifiedImageError:
        return None, "not a recognised image (no capture time)"
    except Exception as e:  # a damaged header: the decode step will say more
        return None, f"unreadable header ({type(e).__name__}: {e})"
    tried = []
    for name, value in (("DateTimeOriginal", exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL)),
                        ("DateTime", exif.get(_DATETIME))):
        if not value:
            continue
        try:
            return parse_exif_datetime(value), ""
        except ValueError as e:
            tried.append(f"EXIF {name} {e}")
    return None, "; ".join(tried) if tried else "no EXIF DateTimeOriginal or DateTime"


def _file_capture_time(path: str) -> tuple[dt.datetime | None, str]:
    """The capture time of one file: PIL parses the header lazily, so only the first blocks are read."""
    fs, inner = storage.get_fs(path)
    with fs.open(inner, "rb") as f:
        return exif_capture_time(f)


def read_capture_times(
    images_dir: str, names: list[str], threads: int = 16, progress: Callable[[int], None] | None = None
) -> pd.DataFrame:
    """``file_name, datetime, time_note`` for each name: headers read in threads (I/O bound)."""

    def one(name: str) -> tuple[str, str, str]:
        try:
            when, note = _file_capture_time(storage.join(images_dir, name))
        except OSError as e:
            when, note = None, f"cannot read the file ({e})"
        return name, when.strftime(DATETIME_FORMAT) if when else "", note

    rows = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for row in pool.map(one, names):
            rows.append(row)
            if progress is not None:
                progress(1)
    return pd.DataFrame(rows, columns=[FILE_NAME, DATETIME, TIME_NOTE])


def camera_of(file_name: str) -> str:
    """A file's camera: the folder it sits in, relative to the images folder (``.`` at the top)."""
    folder = file_name.rpartition("/")[0]
    return folder or "."


def group_sequences(times: pd.DataFrame, gap_s: float = DEFAULT_SEQUENCE_GAP_S) -> pd.DataFrame:
    """Assign ``seq_id`` and ``camera`` to ``file_name, datetime, time_note`` rows.

    Per camera, frames in capture order (file name breaks ties); a frame at least ``gap_s`` after the
    previous one starts a new sequence. A frame with no time is a sequence of its own. The id of a
    sequence is its first frame's file name. Rows come back in (camera, time, name) order.
    """
    if gap_s <= 0:
        raise ValueError(f"the sequence gap must be positive, got {gap_s}")
    frame = times.copy()
    frame[CAMERA] = frame[FILE_NAME].map(camera_of)
    when = pd.to_datetime(frame[DATETIME].where(frame[DATETIME] != ""), format=DATETIME_FORMAT)
    frame["_t"] = when
    frame = frame.sort_values([CAMERA, "_t", FILE_NAME], na_position="last", kind="stable").reset_index(drop=True)
    gap = frame.groupby(CAMERA)["_t"].diff().dt.total_seconds()
    starts = frame["_t"].isna() | gap.isna() | (gap >= gap_s)  # NaN gap: a camera's first frame, or after no time
    first_of_sequence = frame[FILE_NAME].where(starts).ffill()
    frame[SEQ_ID] = first_of_sequence
    return frame[SEQUENCE_COLUMNS]


def sequences_summary(frame: pd.DataFrame) -> str:
    """One line: images, sequences, cameras, and how many files had no capture time."""
    untimed = int((frame[DATETIME] == "").sum())
    return (f"{len(frame)} images in {frame[SEQ_ID].nunique()} sequences from {frame[CAMERA].nunique()} camera "
            f"folders; {untimed} without a capture time (each its own sequence, reason in {TIME_NOTE})")


def write_sequences(frame: pd.DataFrame, path: str) -> None:
    """The sequences table as a metadata CSV a person can edit and pass back as ``--metadata``."""
    storage.write_bytes_atomic(path, frame[SEQUENCE_COLUMNS].to_csv(index=False).encode())


def metadata_or_sequences(
    metadata: Sequence[str] | None,
    images_dir: str,
    write_to: str,
    gap_s: float | None = None,
    job: str = "camtrap",
) -> list[str]:
    """The metadata CSVs a job reads: the given ones, else the folder's sequences, written to ``write_to``.

    A prepared folder carries the ``sequences.csv`` its prepare job inferred from the raw frames' EXIF
    (prepared JPEGs keep none), so its capture times are reused; ``gap_s`` regroups them (None: the
    default gap). A raw folder is scanned.
    """
    if metadata:
        if gap_s is not None:
            raise InputError("--sequence-gap groups a folder's images into sequences; with --metadata the "
                             "sequences are the metadata's (drop one of the two)")
        return list(metadata)
    gap = DEFAULT_SEQUENCE_GAP_S if gap_s is None else gap_s
    prepared = storage.join(images_dir, SEQUENCES_FILE)
    if storage.exists(prepared):
        times = pd.read_csv(io.BytesIO(storage.read_bytes(prepared)), dtype=str, keep_default_na=False)
        missing = [c for c in (FILE_NAME, DATETIME, TIME_NOTE) if c not in times.columns]
        if missing:
            raise InputError(f"{prepared}: missing column(s) {missing}; it is written by prepare.py (pass your "
                             "own table as --metadata instead)")
        frame = group_sequences(times[[FILE_NAME, DATETIME, TIME_NOTE]], gap)
        origin = f"capture times from {prepared}"
    else:
        names = list_images(images_dir)
        if not names:
            raise InputError(f"{images_dir}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} in any case, "
                             "in every subfolder)")
        progress = Progress(f"{job}: reading capture times", len(names))
        try:
            frame = group_sequences(read_capture_times(images_dir, names, progress=progress.update), gap)
        finally:
            progress.close()
        origin = f"EXIF capture times under {images_dir}"
    write_sequences(frame, write_to)
    print(f"{job}: no --metadata: {sequences_summary(frame)}; grouped with a {gap:g} s gap from {origin}; written "
          f"to {write_to} (review it, correct it and pass it back as --metadata)", flush=True)
    return [write_to]
