"""Score a submission CSV against a labels CSV with the competition metric.

The metric itself lives in :mod:`camtrap.metrics` (``competition_loss``, ``per_class_loss``, ``EPS``);
this module only reads, validates and aligns the two files, so offline scoring, training's validation
metric and the benchmark all compute the same number.

What a submission must be, checked before anything is scored (a :class:`ContractError` names the file,
the line and the column of what is wrong):

* a ``seq_id`` column and exactly the labels' class columns, in any order (compared by name);
* every labelled ``seq_id`` exactly once: missing, extra and duplicate seq_ids are each listed;
* every probability numeric, finite and in ``[0, 1]``.

Probabilities of exactly 0 or 1 are valid and clipped to ``[EPS, 1 - EPS]`` by the metric; how many
cells that touched is reported, since one confident mistake costs ``-log(EPS)`` (about 34.5).

Line numbers are those a text editor shows: the header is line 1, the first data row line 2.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from camtrap.data import storage
from camtrap.data.classes import SEQ_ID
from camtrap.data.contract import ContractError, read_labels, read_text_csv
from camtrap.metrics import EPS, competition_loss, per_class_loss

#: How many offending seq_ids or cells an error message lists before "... and N more".
MAX_LISTED = 5
#: The name of the metric on the last line the command prints (``mean_binary_log_loss=<value>``).
METRIC_NAME = "mean_binary_log_loss"
PER_CLASS_COLUMNS = ["class", "positives", "mean_log_loss", "contribution", "share"]
#: The files :func:`write_report` writes into a report folder.
PER_CLASS_CSV = "per_class.csv"
SUMMARY_JSON = "summary.json"


@dataclass(frozen=True)
class EvaluationResult:
    """The metric of one submission and where it comes from.

    ``per_class`` is :func:`camtrap.metrics.per_class_loss`'s table (``class, positives, mean_log_loss,
    contribution, share``), sorted by contribution; its ``contribution`` column sums to ``loss``.
    """

    loss: float
    per_class: pd.DataFrame
    classes: tuple[str, ...]
    num_sequences: int
    num_positive_cells: int
    num_clipped_cells: int
    submission_path: str
    labels_path: str
    #: The labels' seq_ids, and labels and probabilities aligned to them (rows) and to ``classes``.
    seq_ids: tuple[str, ...] = field(repr=False)
    y_true: np.ndarray = field(repr=False)
    probabilities: np.ndarray = field(repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_cells(self) -> int:
        return self.num_sequences * self.num_classes

    def metric_line(self) -> str:
        """``mean_binary_log_loss=<value>``, the value at full (round-trip) precision."""
        return f"{METRIC_NAME}={self.loss!r}"

    def summary(self) -> dict:
        return {
            METRIC_NAME: self.loss,
            "sequences": self.num_sequences,
            "classes": self.num_classes,
            "cells": self.num_cells,
            "positive_cells": self.num_positive_cells,
            "clipped_cells": self.num_clipped_cells,
            "eps": EPS,
            "submission": self.submission_path,
            "labels": self.labels_path,
        }


def _listed(items: Sequence[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(repr(str(i)) for i in items[:limit])
    more = len(items) - limit
    return shown + (f", ... and {more} more" if more > 0 else "")


def _differences(expected: Sequence[str], given: Sequence[str], missing_text: str, extra_text: str,
                 labels_path: str) -> list[str]:
    """A problem line for what of ``expected`` is not in ``given``, and one for what of ``given`` (once each, in
    order) is not expected; none when they match. The texts are ``str.format`` templates of ``{n}`` (how
    many), ``{listed}`` (the first few) and ``{labels}`` (``labels_path``).

    Both sides are reported, not just the first difference: a renamed class or a shifted export shows as
    a missing and an extra name side by side, which is the clue to what went wrong.
    """
    given_set, expected_set = set(given), set(expected)
    missing = [x for x in expected if x not in given_set]
    extra = list(dict.fromkeys(x for x in given if x not in expected_set))
    return [
        text.format(n=len(items), listed=_listed(items), labels=labels_path)
        for text, items in ((missing_text, missing), (extra_text, extra))
        if items
    ]


def _check_columns(path: str, columns: Sequence[str], classes: Sequence[str], labels_path: str) -> None:
    if SEQ_ID not in columns:
        raise ContractError(f"{path}: no '{SEQ_ID}' column in the header (found {_listed(list(columns))})")
    problems = _differences(
        classes, [c for c in columns if c != SEQ_ID], "missing {n} class column(s): {listed}",
        "{n} column(s) that are not classes of {labels}: {listed}", labels_path,
    )
    if problems:
        raise ContractError(
            f"{path}: "
            + "; ".join(problems)
            + f" (expected '{SEQ_ID}' and the {len(classes)} class columns of "
            f"{labels_path}, in any order)"
        )


def _check_seq_ids(path: str, seq_ids: pd.Series, expected: Sequence[str], labels_path: str) -> None:
    problems = []
    empty = np.flatnonzero((seq_ids == "").to_numpy())
    if len(empty):
        lines = [str(seq_ids.index[i]) for i in empty]
        problems.append(
            f"{len(empty)} row(s) with an empty seq_id, at line(s) {', '.join(lines[:MAX_LISTED])}"
        )
    dup_mask = seq_ids.duplicated(keep="first").to_numpy() & (seq_ids != "").to_numpy()
    if dup_mask.any():
        first_line = {s: line for line, s in reversed(list(seq_ids.items()))}
        dups = [
            f"'{seq_ids.iloc[i]}' at line {seq_ids.index[i]} (first at line {first_line[seq_ids.iloc[i]]})"
            for i in np.flatnonzero(dup_mask)
        ]
        more = len(dups) - MAX_LISTED
        problems.append(
            f"{len(dups)} duplicate seq_id row(s): "
            + ", ".join(dups[:MAX_LISTED])
            + (f", ... and {more} more" if more > 0 else "")
        )
    problems += _differences(
        expected, [s for s in seq_ids if s], "{n} seq_id(s) of {labels} missing: {listed}",
        "{n} seq_id(s) not in {labels}: {listed}", labels_path,
    )
    if problems:
        raise ContractError(
            f"{path}: every labelled seq_id must appear exactly once:\n  " + "\n  ".join(problems)
        )


def _parse_probabilities(path: str, frame: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """The class columns as float64 (rows in file order); every bad cell is counted, the first few named."""
    raw = frame[list(classes)].apply(lambda s: s.str.strip())
    values = raw.apply(lambda s: pd.to_numeric(s, errors="coerce")).to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values < 0.0) | (values > 1.0)
    if not bad.any():
        return values
    rows, cols = np.nonzero(bad)
    shown = []
    for r, c in zip(rows[: MAX_LISTED * 2], cols[: MAX_LISTED * 2]):
        text = raw.iat[r, c]
        v = values[r, c]
        if text == "":
            why = "is empty"
        elif np.isnan(v) and text.lower() not in ("nan", "-nan", "+nan"):
            why = "is not a number"
        elif not np.isfinite(v):
            why = "is not finite"
        else:
            why = "is outside [0, 1]"
        shown.append(
            f"  {path}:{frame.index[r]}: column '{classes[c]}': value {text!r} {why} (seq_id '{frame[SEQ_ID].iat[r]}')"
        )
    more = len(rows) - len(shown)
    if more > 0:
        shown.append(f"  ... and {more} more")
    raise ContractError(
        f"{path}: {len(rows)} invalid probability cell(s); each must be a finite number in [0, 1]:\n"
        + "\n".join(shown)
    )


def evaluate_submission(submission_path: str, labels_path: str) -> EvaluationResult:
    """Validate ``submission_path`` against ``labels_path`` and score it (lower is better).

    The labels are read with their own header's class list and ``strict=True`` (one bad label row is an
    error here: a score on a silently smaller test set would not be comparable). Raises
    :class:`ContractError` naming the file, line and column of any problem in either file.
    """
    submission_path, labels_path = str(submission_path), str(labels_path)
    labels = read_labels(labels_path, classes=None, strict=True)
    classes = labels.classes
    sub, _ = read_text_csv(submission_path, strict=True)
    _check_columns(submission_path, list(sub.columns), classes, labels_path)
    if sub.empty:
        raise ContractError(f"{submission_path}: no data rows (header only)")
    seq_ids = sub[SEQ_ID].str.strip()
    sub[SEQ_ID] = seq_ids
    expected = list(labels.frame[SEQ_ID])
    _check_seq_ids(submission_path, seq_ids, expected, labels_path)
    probs = _parse_probabilities(submission_path, sub, classes)

    # Align the submission's rows to the labels' order (both sides hold the same set of unique seq_ids).
    order = pd.Index(seq_ids).get_indexer(expected)
    p = probs[order]
    y = labels.frame[list(classes)].to_numpy(dtype=np.float64)
    clipped = int(((p < EPS) | (p > 1.0 - EPS)).sum())
    return EvaluationResult(
        loss=competition_loss(y, p),
        per_class=per_class_loss(y, p, classes),
        classes=tuple(classes),
        num_sequences=len(expected),
        num_positive_cells=int(y.sum()),
        num_clipped_cells=clipped,
        submission_path=submission_path,
        labels_path=labels_path,
        seq_ids=tuple(expected),
        y_true=y,
        probabilities=p,
    )


def format_report(result: EvaluationResult, top: int = 10) -> str:
    """The human-readable report; its last line is :meth:`EvaluationResult.metric_line`."""
    table = result.per_class.head(max(int(top), 0)).copy()
    lines = [
        f"evaluate: {result.submission_path} against {result.labels_path}",
        (
            f"  {result.num_sequences} sequences x {result.num_classes} classes = {result.num_cells} cells, "
            f"{result.num_positive_cells} positive"
        ),
    ]
    if result.num_clipped_cells:
        lines.append(
            f"  {result.num_clipped_cells} probabilities outside [{EPS:g}, 1 - {EPS:g}] were clipped "
            f"(a confident mistake costs {-np.log(EPS):.1f} per cell)"
        )
    if len(table):
        lines.append(f"top {len(table)} of {result.num_classes} classes by contribution to the metric:")
        table["share"] = (100.0 * table["share"]).map(lambda v: f"{v:.1f}%")
        lines.extend(
            "  " + row for row in table.to_string(index=False, float_format=lambda v: f"{v:.6f}").splitlines()
        )
    lines.append(result.metric_line())
    return "\n".join(lines)


def write_report(result: EvaluationResult, report_dir: str) -> list[str]:
    """Write ``per_class.csv`` (sorted by contribution) and ``summary.json`` under ``report_dir`` (a folder or
    URI); returns the paths written."""
    storage.makedirs(report_dir)
    per_class_path = storage.join(report_dir, PER_CLASS_CSV)
    buf = io.StringIO()
    result.per_class[PER_CLASS_COLUMNS].to_csv(buf, index=False)
    storage.write_bytes_atomic(per_class_path, buf.getvalue().encode())
    summary_path = storage.join(report_dir, SUMMARY_JSON)
    storage.write_bytes_atomic(summary_path, (json.dumps(result.summary(), indent=2) + "\n").encode())
    return [per_class_path, summary_path]


def prior_baseline(model_path: str, labels_path: str) -> float:
    """The metric of predicting a model's training class priors for every labelled sequence.

    The yardstick a trained model must beat: it knows only how often each class occurs.
    """
    from camtrap.model_file import read_model_file

    state = read_model_file(model_path)
    priors = dict(zip(state["classes"], state["priors"]))
    labels = read_labels(labels_path, classes=None, strict=True)
    missing = [c for c in labels.classes if c not in priors]
    if missing:
        raise ContractError(f"{model_path}: no prior for class column(s) {missing} of {labels_path}")
    y = labels.frame[list(labels.classes)].to_numpy(dtype=np.float64)
    p = np.broadcast_to(np.array([priors[c] for c in labels.classes]), y.shape)
    return competition_loss(y, p)
