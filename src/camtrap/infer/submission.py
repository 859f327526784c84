"""From per-image probabilities to the competition's submission: aggregation, row order, the CSV.

Geometric mean over a sequence's images x flips per model, then across models (or the arithmetic mean,
or the 1st place's mean-for-species / gmean-for-empty rule, :func:`camtrap.metrics.aggregate`). A
sequence with no decodable image gets the class priors and is listed with its reasons.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from camtrap.data import storage
from camtrap.data.classes import EMPTY, SEQ_ID
from camtrap.data.contract import read_text_csv
from camtrap.data.frames import ERROR
from camtrap.errors import InputError
from camtrap.infer.predictor import prob_column
from camtrap.metrics import Aggregate, aggregate, aggregate_by_sequence

#: Submission probabilities are kept this far inside (0, 1): a confident mistake costs at most
#: ``-log(1e-6)`` (13.8) per cell instead of the metric's 34.5.
SUBMISSION_EPS = 1e-6
#: Where the sequences that got the priors are listed, with their reasons (in the work dir).
FAILED_SEQUENCES_FILE = "failed_sequences.csv"
#: Digits written per probability: float32 precision, and the CSV stays a third of repr's size.
FLOAT_FORMAT = "%.8g"


def aggregate_submission(
    results: pd.DataFrame,
    seq_order: Sequence[str],
    metas: Sequence[dict],
    how: Aggregate = "gmean",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per sequence in ``seq_order``; returns (submission, failed sequences with reasons)."""
    classes = list(metas[0]["classes"])
    n_classes = len(classes)
    empty_index = classes.index(EMPTY) if EMPTY in classes else None
    ok = results[results[ERROR] == ""]
    per_model = []
    for i in range(len(metas)):
        views = np.stack(ok[prob_column(i)].to_numpy()).reshape(-1, n_classes) if len(ok) else np.zeros((0, n_classes))
        seq_of_views = np.repeat(ok[SEQ_ID].to_numpy(), 2)
        seqs, probs = aggregate_by_sequence(seq_of_views, views, how, empty_index)
        per_model.append(pd.DataFrame(probs, index=seqs, columns=classes))
    scored = per_model[0].index
    stacked = np.stack([m.loc[scored].to_numpy() for m in per_model])
    combined = pd.DataFrame(aggregate(stacked, how, empty_index, axis=0), index=scored, columns=classes)
    priors = aggregate(np.stack([np.asarray(m["priors"]) for m in metas]), how, empty_index, axis=0)
    missing = [s for s in seq_order if s not in combined.index]
    if missing:
        combined = pd.concat([combined, pd.DataFrame(np.tile(priors, (len(missing), 1)), index=missing, columns=classes)])
    submission = combined.loc[list(seq_order)].clip(SUBMISSION_EPS, 1 - SUBMISSION_EPS)
    bad = ~np.isfinite(submission.to_numpy()).all(axis=1)
    if bad.any():  # never an empty or non-finite cell in a submission
        raise ValueError(f"non-finite probabilities for {int(bad.sum())} sequences, e.g. "
                         f"{list(submission.index[bad][:3])}: a model produced NaN")
    submission.index.name = SEQ_ID
    reasons = results[results[ERROR] != ""].groupby(SEQ_ID)[ERROR].agg("; ".join)
    failed = pd.DataFrame({SEQ_ID: missing, "reason": [reasons.get(s, "no image listed") for s in missing]})
    return submission.reset_index(), failed


def submission_order(path: str, seq_order: Sequence[str], classes: Sequence[str]) -> tuple[list[str], list[str]]:
    """(row order, column order) of a submission from a ``submission_format.csv``.

    Its class columns must be the model's (in any order) and its seq_ids must be in the metadata;
    sequences of the metadata that it lacks follow its rows.
    """
    fmt, _ = read_text_csv(path, strict=True)
    if SEQ_ID not in fmt.columns:
        raise InputError(f"{path}: no '{SEQ_ID}' column; a submission format is '{SEQ_ID}' and the class columns")
    duplicated = fmt[SEQ_ID][fmt[SEQ_ID].duplicated()]
    if len(duplicated):
        lines = [int(i) for i in duplicated.index[:5]]
        raise InputError(f"{path}: seq_id listed twice: {sorted(set(duplicated))[:5]} (lines {lines}); a "
                         "submission has one row per sequence")
    fmt_cols = [c for c in fmt.columns if c != SEQ_ID]
    if set(fmt_cols) != set(classes):
        raise InputError(f"{path}: class columns differ from the model's "
                         f"(missing {sorted(set(classes) - set(fmt_cols))}, extra {sorted(set(fmt_cols) - set(classes))})")
    extra = set(fmt[SEQ_ID]) - set(seq_order)
    if extra:
        raise InputError(f"{path}: {len(extra)} seq_ids have no row in the metadata, e.g. {sorted(extra)[:3]}")
    listed = set(fmt[SEQ_ID])
    return list(fmt[SEQ_ID]) + [s for s in seq_order if s not in listed], fmt_cols


def write_submission(submission: pd.DataFrame, out: str) -> None:
    """The submission CSV at ``out`` (a path or URI), written atomically."""
    storage.makedirs(os.path.dirname(os.path.abspath(out)) if not storage.is_uri(out) else os.path.dirname(out))
    storage.write_bytes_atomic(out, submission.to_csv(index=False, float_format=FLOAT_FORMAT).encode())
