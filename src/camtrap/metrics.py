"""The competition metric, sequence aggregation, and the class-prior baseline.

The metric is the mean binary log loss over every (sequence, class) cell, probabilities clipped to
``[1e-15, 1 - 1e-15]``. On logits it equals ``torch.nn.MultiLabelSoftMarginLoss``, which is why the
2nd-place solution used that loss for both training and model selection.

Aggregation lives here too because training's validation metric and scoring must aggregate a
sequence's images the same way: the seed's geometric mean, or the alternatives the 1st place used.
That is also why this module sits at the package's top level rather than under ``evaluate/``: training
(validation), scoring and evaluation all use it, and none of them may import a later stage. numpy and
pandas only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

#: Probability clip of the competition metric: ``-log(EPS)`` (34.5) is the most one cell can cost.
EPS = 1e-15
#: Floor (and ``1 - ceiling``) of a class prior: a class never seen in training still gets a finite
#: log-odds for the classifier's initial bias and a finite cost in the prior baseline.
PRIOR_FLOOR = 1e-6
#: Clip before ``logit(p)`` of float32 probabilities: float32 holds ``1 - 1e-7`` but rounds
#: ``1 - 1e-15`` to 1, whose logit is infinite.
LOGIT_EPS = 1e-7
Aggregate = Literal["gmean", "mean", "empty-gmean"]


def clip_probs(p: np.ndarray, eps: float = EPS) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)


def log_loss_cells(y_true: np.ndarray, p: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Binary log loss of each cell (same shape as the inputs)."""
    y = np.asarray(y_true, dtype=np.float64)
    p = clip_probs(p, eps)
    return -(y * np.log(p) + (1.0 - y) * np.log1p(-p))


def competition_loss(y_true: np.ndarray, p: np.ndarray, eps: float = EPS) -> float:
    """Mean aggregated binary log loss: the competition's score (lower is better)."""
    y = np.asarray(y_true)
    if y.shape != np.shape(p) or y.ndim != 2:
        raise ValueError(f"labels {y.shape} and probabilities {np.shape(p)} must be the same 2-D shape")
    return float(log_loss_cells(y, p, eps).mean())


def per_class_loss(y_true: np.ndarray, p: np.ndarray, classes: Sequence[str], eps: float = EPS) -> pd.DataFrame:
    """Each class's mean log loss and its share of the total metric, sorted by contribution."""
    cells = log_loss_cells(y_true, p, eps)
    n = cells.shape[0]
    table = pd.DataFrame(
        {
            "class": list(classes),
            "positives": np.asarray(y_true).sum(axis=0).astype(int),
            "mean_log_loss": cells.mean(axis=0),
            "contribution": cells.sum(axis=0) / cells.size,
        }
    )
    table["share"] = table["contribution"] / max(table["contribution"].sum(), 1e-300)
    table.attrs["sequences"] = n
    return table.sort_values("contribution", ascending=False, kind="stable").reset_index(drop=True)


def class_priors(label_matrix: np.ndarray) -> np.ndarray:
    """Each class's frequency among training sequences, clipped away from 0 and 1."""
    return clip_probs(np.asarray(label_matrix, dtype=np.float64).mean(axis=0), PRIOR_FLOOR)


def logit(p: np.ndarray, eps: float = LOGIT_EPS) -> np.ndarray:
    """``log(p / (1 - p))`` of probabilities clipped to ``[eps, 1 - eps]`` (float64)."""
    p = clip_probs(p, eps)
    return np.log(p) - np.log1p(-p)


def prior_baseline_loss(train_labels: np.ndarray, eval_labels: np.ndarray) -> float:
    """The metric of predicting every class's training frequency for every sequence."""
    priors = class_priors(train_labels)
    return competition_loss(eval_labels, np.broadcast_to(priors, np.shape(eval_labels)))


def geometric_mean(p: np.ndarray, axis: int = 0, eps: float = EPS) -> np.ndarray:
    """``exp(mean(log p))``; probabilities are floored at ``eps`` so an exact 0 cannot poison a sequence."""
    return np.exp(np.log(np.maximum(np.asarray(p, dtype=np.float64), eps)).mean(axis=axis))


def _combine(how: Aggregate, arith: np.ndarray, geo: np.ndarray, empty_index: int | None) -> np.ndarray:
    """Pick the aggregation from precomputed arithmetic and geometric means (last axis = classes)."""
    if how == "gmean":
        return geo
    if how == "mean":
        return arith
    if how == "empty-gmean":
        if empty_index is None:
            raise ValueError("aggregate 'empty-gmean' needs the index of the 'empty' class")
        out = np.array(arith, dtype=np.float64, copy=True)
        out[..., empty_index] = geo[..., empty_index]
        return out
    raise ValueError(f"unknown aggregation {how!r}; expected gmean, mean or empty-gmean")


def aggregate(p: np.ndarray, how: Aggregate = "gmean", empty_index: int | None = None, axis: int = 0) -> np.ndarray:
    """Combine several predictions of one thing (a sequence's views, or several models) into one.

    * ``gmean``: geometric mean of every column (the 2nd place, within a sequence and across models).
    * ``mean``: arithmetic mean.
    * ``empty-gmean``: arithmetic mean for species, geometric mean for ``empty`` (the 1st place's rule):
      one frame with an animal should lift a species, while ``empty`` should need every frame to agree.
    """
    p = np.asarray(p, dtype=np.float64)
    return _combine(how, p.mean(axis=axis), geometric_mean(p, axis=axis), empty_index)


def aggregate_by_sequence(
    seq_ids: Sequence[str], probs: np.ndarray, how: Aggregate = "gmean", empty_index: int | None = None
) -> tuple[list[str], np.ndarray]:
    """:func:`aggregate` applied per sequence; one row per sequence, in first-seen order.

    Vectorised with ``np.add.at``, not a Python loop per sequence: a season has hundreds of thousands.
    """
    codes, uniques = pd.factorize(pd.Index(list(seq_ids)), sort=False)
    p = np.asarray(probs, dtype=np.float64)
    counts = np.bincount(codes, minlength=len(uniques)).astype(np.float64)[:, None]

    def group_mean(values: np.ndarray) -> np.ndarray:
        sums = np.zeros((len(uniques), values.shape[1]))
        np.add.at(sums, codes, values)
        return sums / counts

    geo = np.exp(group_mean(np.log(np.maximum(p, EPS))))
    return [str(s) for s in uniques], _combine(how, group_mean(p), geo, empty_index)
