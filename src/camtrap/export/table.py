"""The ``csv`` format: one row per sequence, for a spreadsheet or R.

Columns: ``seq_id, camera, start, end, images, failed_images, files`` (``;``-joined), the top classes
with their probabilities (``top1, top1_probability, ...``), ``labels`` (every class at or above the
threshold, ``;``-joined; see :func:`camtrap.export.season.sequence_labels`) and ``failure`` (why a
sequence has no prediction; its probabilities are then the class priors and its labels are empty).
"""

from __future__ import annotations

import pandas as pd

from camtrap.data import storage
from camtrap.data.classes import SEQ_ID
from camtrap.data.sequences import CAMERA
from camtrap.export.season import (
    ExportSettings,
    ScoredSeason,
    format_time,
    sequence_labels,
    sequence_spans,
    top_classes,
)

PREDICTIONS_FILE = "predictions.csv"


def sequence_table(season: ScoredSeason, settings: ExportSettings, types: pd.Series) -> pd.DataFrame:
    """The ``csv`` format's rows, in the season's sequence order."""
    spans = sequence_spans(season.images, season.times)
    failure = season.failure_of()
    rows = []
    for seq_id, probs in season.sequences[season.classes].iterrows():
        span = spans.loc[seq_id]
        row = {SEQ_ID: seq_id, CAMERA: span[CAMERA], "start": format_time(span["start"]),
               "end": format_time(span["end"]), "images": int(span["images"]),
               "failed_images": int(span["failed_images"]), "files": span["files"]}
        for k, (name, p) in enumerate(top_classes(probs, settings.top_k), start=1):
            row[f"top{k}"], row[f"top{k}_probability"] = name, round(p, 6)
        failed = seq_id in failure
        row["labels"] = "" if failed else ";".join(sequence_labels(probs, types, settings.threshold))
        row["failure"] = failure.get(seq_id, "")
        rows.append(row)
    return pd.DataFrame(rows)


def write_table(season: ScoredSeason, out_dir: str, settings: ExportSettings, types: pd.Series) -> str:
    """``OUT/predictions.csv``; returns its path."""
    path = storage.join(out_dir, PREDICTIONS_FILE)
    storage.write_bytes_atomic(path, sequence_table(season, settings, types).to_csv(index=False).encode())
    return path
