"""The competition metric against torch, and the aggregations against plain loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import gmean

from camtrap.metrics import (
    aggregate,
    aggregate_by_sequence,
    class_priors,
    competition_loss,
    per_class_loss,
    prior_baseline_loss,
)


def test_metric_equals_multilabel_soft_margin_loss_on_logits():
    rng = np.random.default_rng(0)
    y = (rng.random((50, 54)) < 0.1).astype(np.float64)
    logits = rng.normal(0, 4, (50, 54))
    p = 1 / (1 + np.exp(-logits))
    torch_loss = torch.nn.MultiLabelSoftMarginLoss()(torch.tensor(logits), torch.tensor(y)).item()
    assert competition_loss(y, p) == pytest.approx(torch_loss, abs=1e-9)


def test_metric_perfect_and_worst_and_clipping():
    y = np.eye(3)
    assert competition_loss(y, y) == pytest.approx(-np.log1p(-1e-15), abs=1e-12)
    assert competition_loss(y, 1 - y) == pytest.approx(-np.log(1e-15), rel=1e-4)  # 1 - 1e-15 rounds in float64
    with pytest.raises(ValueError, match="same 2-D shape"):
        competition_loss(y, y[:2])


def test_per_class_table_sums_to_metric():
    rng = np.random.default_rng(1)
    y = (rng.random((40, 4)) < 0.3).astype(float)
    p = rng.random((40, 4))
    table = per_class_loss(y, p, ["a", "b", "c", "d"])
    assert table["contribution"].sum() == pytest.approx(competition_loss(y, p))
    assert list(table["contribution"]) == sorted(table["contribution"], reverse=True)


def test_prior_baseline():
    train = np.array([[1, 0], [1, 0], [0, 1], [1, 0]])
    assert class_priors(train) == pytest.approx([0.75, 0.25])
    ev = np.array([[1, 0]])
    assert prior_baseline_loss(train, ev) == pytest.approx(-(np.log(0.75) + np.log(0.75)) / 2)


def test_aggregate_matches_scipy_gmean_and_rules():
    rng = np.random.default_rng(2)
    p = rng.random((6, 5)) * 0.98 + 0.01
    assert aggregate(p, "gmean") == pytest.approx(gmean(p, axis=0))
    assert aggregate(p, "mean") == pytest.approx(p.mean(axis=0))
    mixed = aggregate(p, "empty-gmean", empty_index=2)
    assert mixed[2] == pytest.approx(gmean(p[:, 2])) and mixed[0] == pytest.approx(p[:, 0].mean())
    with pytest.raises(ValueError, match="empty"):
        aggregate(p, "empty-gmean")
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(p, "median")


@pytest.mark.parametrize("how", ["gmean", "mean", "empty-gmean"])
def test_aggregate_by_sequence_equals_per_group_loop(how):
    rng = np.random.default_rng(3)
    seq = ["b", "a", "b", "c", "a", "b"]
    p = rng.random((6, 4))
    ids, out = aggregate_by_sequence(seq, p, how, empty_index=1)
    assert ids == ["b", "a", "c"]
    for i, s in enumerate(ids):
        rows = p[[j for j, x in enumerate(seq) if x == s]]
        assert out[i] == pytest.approx(aggregate(rows, how, empty_index=1))
