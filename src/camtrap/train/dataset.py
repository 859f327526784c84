"""Training and validation tables, and the decode step of the pipelines that read their images.

The table side (pandas, in the driver) joins metadata, labels and the preparation manifest, records
every row it cannot use, and splits off validation by whole sequences. :func:`decode_files` reads,
decodes (:mod:`camtrap.data.imageio`) and transforms images inside the Ray Data tasks of
:mod:`camtrap.train.epochs`, so CPU decoding scales apart from the training workers. Images travel to
the workers as uint8 HWC arrays (4x smaller than float32); normalisation happens on the worker's device.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from camtrap.data import storage
from camtrap.data.classes import FILE_NAME, SEQ_ID
from camtrap.data.contract import ClassSetting, RowIssue, check_coverage, read_labels, read_metadata
from camtrap.data.imageio import DEFAULT_DECODE, DecodeMode, ImageDecodeError, load_sized
from camtrap.data.prepare import ERROR, MANIFEST, STATUS, STATUS_OK
from camtrap.errors import InputError

log = logging.getLogger(__name__)

TARGET = "target"
IMAGE = "image"


@dataclass
class TrainingTable:
    """One row per usable image: ``seq_id, file_name, target`` (target: float32 vector per class)."""

    frame: pd.DataFrame
    classes: tuple[str, ...]
    issues: list[RowIssue] = field(default_factory=list)

    def sequences(self) -> list[str]:
        return list(dict.fromkeys(self.frame[SEQ_ID]))

    def sequence_targets(self) -> tuple[list[str], np.ndarray]:
        first = self.frame.drop_duplicates(SEQ_ID)
        return list(first[SEQ_ID]), np.stack(first[TARGET].to_numpy()).astype(np.float32)


def load_training_table(
    metadata: str | Sequence[str],
    labels: str,
    images_dir: str,
    classes: ClassSetting = "auto",
) -> TrainingTable:
    """Join metadata and labels; drop (and record) rows that cannot be trained on.

    ``classes``: as :func:`camtrap.data.contract.read_labels` takes it. When ``images_dir`` holds a
    preparation manifest, files that failed to prepare are dropped with the manifest's reason.
    """
    md = read_metadata(metadata)
    lab = read_labels(labels, classes=classes)
    issues: list[RowIssue] = [*md.rejected, *lab.rejected, *check_coverage(md, lab)]
    frame = md.frame[[SEQ_ID, FILE_NAME]]
    manifest_path = storage.join(images_dir, MANIFEST)
    if storage.exists(manifest_path):
        manifest = pd.read_parquet(manifest_path, columns=[FILE_NAME, STATUS, ERROR])
        bad = manifest[manifest[STATUS] != STATUS_OK].set_index(FILE_NAME)[ERROR]
        failed = frame[FILE_NAME].isin(bad.index)
        for seq_id, name in frame.loc[failed, [SEQ_ID, FILE_NAME]].itertuples(index=False, name=None):
            issues.append(RowIssue(manifest_path, None, FILE_NAME, f"not prepared: {bad[name]}", seq_id, name))
        frame = frame[~failed]
    targets = lab.frame.set_index(SEQ_ID)[list(lab.classes)]
    frame = frame[frame[SEQ_ID].isin(targets.index)].reset_index(drop=True)
    matrix = targets.loc[frame[SEQ_ID]].to_numpy(dtype=np.float32)
    frame = frame.assign(**{TARGET: list(matrix)})
    if frame.empty:
        raise InputError(f"no usable training rows: {len(issues)} problems, e.g. {issues[:3]}")
    return TrainingTable(frame=frame, classes=lab.classes, issues=issues)


def _stable_fraction(seq_id: str, seed: int) -> float:
    """A per-sequence number in [0, 1) that depends only on the id and seed (not on row order)."""
    digest = hashlib.blake2b(f"{seed}:{seq_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_validation(table: TrainingTable, validation) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows into train and validation by whole sequences.

    ``validation`` is a :class:`camtrap.config.recipe.ValidationConfig`: a ``file_name`` prefix (a season),
    a seq_id-grouped random fraction (stable under reordering and appending rows), or explicit files.
    A sequence never lands on both sides.
    """
    frame = table.frame
    if validation.prefix is not None:
        in_val_seq = set(frame.loc[frame[FILE_NAME].str.startswith(validation.prefix), SEQ_ID])
        is_val = frame[SEQ_ID].isin(in_val_seq)
    elif validation.fraction is not None:
        seqs = pd.Series(frame[SEQ_ID].unique())
        chosen = set(seqs[seqs.map(lambda s: _stable_fraction(s, validation.seed)) < validation.fraction])
        is_val = frame[SEQ_ID].isin(chosen)
    else:
        raise ValueError("explicit validation files are loaded by the caller, not split")
    train, val = frame[~is_val].reset_index(drop=True), frame[is_val].reset_index(drop=True)
    if train.empty or val.empty:
        raise ValueError(
            f"validation split {validation} leaves {len(train)} training and {len(val)} validation rows; "
            "both must be non-empty"
        )
    return train, val


def decode_files(
    names: Sequence[str],
    images_dir: str,
    transform: Callable[..., np.ndarray],
    seeds: Sequence[int] | None = None,
    decode: DecodeMode = DEFAULT_DECODE,
) -> tuple[list[int], np.ndarray]:
    """Read, decode and transform each file: (positions of the files kept, object array of their images).

    ``transform``: a :class:`camtrap.train.augment.TrainTransform` or ``EvalTransform``. The file is
    decoded straight to the transform's resize size (:func:`camtrap.data.imageio.load_sized`, the same
    LANCZOS as the transform's own resize, so ``exact`` gives the same bytes as resizing in the
    transform) in mode ``decode``, and the rest of the transform follows. ``seeds``: one augmentation
    seed per file, passed as ``after_resize(image, seed=...)``. A file that fails to decode is left out
    with a warning naming it.
    """
    keep, images = [], []
    for i, name in enumerate(names):
        try:
            img, _ = load_sized(storage.read_inside(images_dir, str(name)), transform.resize_target, decode=decode)
        except (ImageDecodeError, OSError) as e:
            log.warning("skipping %s: %s", name, e)
            continue
        arr = np.asarray(img)
        images.append(transform.after_resize(arr) if seeds is None else transform.after_resize(arr, seed=int(seeds[i])))
        keep.append(i)
    out = np.empty(len(images), dtype=object)
    out[:] = images
    return keep, out
