"""Offline scoring: the metric against torch, the extremes, and every way a submission can be invalid."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from jobs import load_job

from camtrap.data.contract import ContractError
from camtrap.evaluate.submission import evaluate_submission

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["empty", "zebra", "wildebeest", "gazellethomsons", "lionfemale", "buffalo"]



def make_case(n: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(CLASSES))) < 0.3).astype(np.int64)
    p = rng.uniform(0.02, 0.98, (n, len(CLASSES)))
    seq_ids = [f"SER_S11_{i:05d}" for i in range(n)]
    return seq_ids, y, p


def write(tmp_path: Path, name: str, seq_ids, matrix, columns=CLASSES) -> Path:
    df = pd.DataFrame(matrix, columns=list(columns))
    df.insert(0, "seq_id", list(seq_ids))
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def case(tmp_path):
    seq_ids, y, p = make_case()
    return tmp_path, seq_ids, y, p, write(tmp_path, "labels.csv", seq_ids, y)


def test_metric_equals_multilabel_soft_margin_loss_on_logits(case):
    tmp_path, seq_ids, y, p, labels = case
    # Shuffled rows: the submission is aligned to the labels by seq_id, not by position.
    perm = np.random.default_rng(1).permutation(len(seq_ids))
    sub = write(tmp_path, "sub.csv", [seq_ids[i] for i in perm], p[perm])
    result = evaluate_submission(sub, labels)
    logits = torch.logit(torch.tensor(p, dtype=torch.float64))
    expected = torch.nn.MultiLabelSoftMarginLoss()(logits, torch.tensor(y, dtype=torch.float64)).item()
    assert result.loss == pytest.approx(expected, abs=1e-9)
    assert result.num_sequences == len(seq_ids) and result.num_classes == len(CLASSES)
    assert result.num_positive_cells == int(y.sum()) and result.num_clipped_cells == 0
    assert list(result.per_class.columns) == ["class", "positives", "mean_log_loss", "contribution", "share"]
    assert result.per_class["contribution"].sum() == pytest.approx(result.loss)
    assert set(result.per_class["class"]) == set(CLASSES)


def test_perfect_and_worst_submissions(case):
    tmp_path, seq_ids, y, _, labels = case
    perfect = evaluate_submission(write(tmp_path, "perfect.csv", seq_ids, y.astype(float)), labels)
    assert 0 < perfect.loss < 1e-12
    assert perfect.num_clipped_cells == y.size
    worst = evaluate_submission(write(tmp_path, "worst.csv", seq_ids, 1.0 - y), labels)
    assert worst.loss == pytest.approx(-math.log(1e-15), rel=1e-3)  # about 34.54


def test_column_order_does_not_matter(case):
    tmp_path, seq_ids, _, p, labels = case
    base = evaluate_submission(write(tmp_path, "a.csv", seq_ids, p), labels)
    order = list(reversed(range(len(CLASSES))))
    df = pd.DataFrame(p[:, order], columns=[CLASSES[i] for i in order])
    df["seq_id"] = seq_ids  # seq_id last, classes reversed
    df.to_csv(tmp_path / "b.csv", index=False)
    assert evaluate_submission(tmp_path / "b.csv", labels).loss == base.loss


def test_main_prints_metric_last_and_writes_report(case, capsys):
    tmp_path, seq_ids, _, p, labels = case
    sub = write(tmp_path, "sub.csv", seq_ids, p)
    job = load_job("evaluate")
    report = tmp_path / "report"
    rc = job.main(["--submission", str(sub), "--labels", str(labels), "--report-dir", str(report)])
    out = capsys.readouterr().out
    assert rc == 0
    last = out.rstrip("\n").splitlines()[-1]
    assert last.startswith("mean_binary_log_loss=") and " " not in last
    value = float(last.split("=", 1)[1])
    assert value == evaluate_submission(sub, labels).loss  # full precision, round-trips exactly
    assert "contribution" in out
    table = pd.read_csv(report / "per_class.csv")
    assert list(table.columns) == ["class", "positives", "mean_log_loss", "contribution", "share"]
    assert list(table["contribution"]) == sorted(table["contribution"], reverse=True)
    assert table["contribution"].sum() == pytest.approx(value)


def test_missing_duplicate_and_extra_seq_ids_are_named(case):
    tmp_path, seq_ids, _, p, labels = case
    sub = write(tmp_path, "missing.csv", seq_ids[1:], p[1:])
    with pytest.raises(ContractError, match=r"1 seq_id\(s\) of .*labels.csv missing: 'SER_S11_00000'"):
        evaluate_submission(sub, labels)
    ids = list(seq_ids)
    ids[3] = ids[2]  # SER_S11_00002 twice (lines 4 and 5), SER_S11_00003 missing
    ids[5] = "SER_S99_EXTRA"
    with pytest.raises(ContractError) as err:
        evaluate_submission(write(tmp_path, "dup.csv", ids, p), labels)
    msg = str(err.value)
    assert "dup.csv" in msg
    assert "'SER_S11_00002' at line 5 (first at line 4)" in msg
    assert "'SER_S11_00003'" in msg and "'SER_S11_00005'" in msg
    assert "not in" in msg and "'SER_S99_EXTRA'" in msg


def test_column_problems_are_named(case):
    tmp_path, seq_ids, _, p, labels = case
    extra = write(tmp_path, "extra.csv", seq_ids, np.c_[p, p[:, :1]], columns=[*CLASSES, "unicorn"])
    with pytest.raises(ContractError, match=r"extra.csv: 1 column\(s\) that are not classes .*'unicorn'"):
        evaluate_submission(extra, labels)
    missing = write(tmp_path, "fewer.csv", seq_ids, p[:, 1:], columns=CLASSES[1:])
    with pytest.raises(ContractError, match=r"fewer.csv: missing 1 class column\(s\): 'empty'"):
        evaluate_submission(missing, labels)
    df = pd.DataFrame(p, columns=CLASSES)
    df.insert(0, "id", seq_ids)
    df.to_csv(tmp_path / "noid.csv", index=False)
    with pytest.raises(ContractError, match=r"noid.csv: no 'seq_id' column"):
        evaluate_submission(tmp_path / "noid.csv", labels)


@pytest.mark.parametrize(
    "value, reason",
    [
        ("1.5", "is outside \\[0, 1\\]"),
        ("-0.1", "is outside"),
        ("nan", "is not finite"),
        ("", "is empty"),
        ("inf", "is not finite"),
        ("high", "is not a number"),
    ],
)
def test_bad_probability_cell_is_named_by_line_and_column(case, value, reason):
    tmp_path, seq_ids, _, p, labels = case
    df = pd.DataFrame(p, columns=CLASSES).astype(object)
    df.insert(0, "seq_id", seq_ids)
    df.loc[6, "zebra"] = value  # data row 7 = line 8
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    with pytest.raises(ContractError, match=rf"bad.csv:8: column 'zebra': value '{value}' {reason}") as err:
        evaluate_submission(path, labels)
    assert "1 invalid probability cell(s)" in str(err.value) and "SER_S11_00006" in str(err.value)


def test_invalid_input_exits_2_with_message(case, capsys):
    tmp_path, seq_ids, _, p, labels = case
    p = p.copy()
    p[0, 0] = 1.5
    sub = write(tmp_path, "sub.csv", seq_ids, p)
    job = load_job("evaluate")
    assert job.main(["--submission", str(sub), "--labels", str(labels)]) == 2
    captured = capsys.readouterr()
    assert "sub.csv:2: column 'empty': value '1.5' is outside [0, 1]" in captured.err
    assert "mean_binary_log_loss" not in captured.out
    assert job.main(["--submission", str(tmp_path / "nope.csv"), "--labels", str(labels)]) == 2
    assert "file not found" in capsys.readouterr().err


def test_bad_labels_file_is_refused(case):
    tmp_path, seq_ids, y, p, _ = case
    y = y.astype(object)
    y[4, 1] = 2
    labels = write(tmp_path, "labels_bad.csv", seq_ids, y)
    with pytest.raises(ContractError, match=r"labels_bad.csv:6: column 'zebra'"):
        evaluate_submission(write(tmp_path, "sub.csv", seq_ids, p), labels)


def test_prior_baseline_from_a_model_file(tmp_path):
    from camtrap.evaluate.submission import prior_baseline
    from camtrap.model_file import save_model_file

    labels = tmp_path / "labels.csv"
    labels.write_text("seq_id,b,a\ns1,1,0\ns2,0,1\ns3,0,1\n")
    model = tmp_path / "model.pt"
    save_model_file(str(model), {}, {"model": "resnet10t"}, ["a", "b"], [0.75, 0.25], 64, [0.5] * 3, [0.5] * 3)
    y = np.array([[1, 0], [0, 1], [0, 1]], dtype=float)  # columns b, a
    p = np.broadcast_to([0.25, 0.75], y.shape)
    expected = float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))
    assert prior_baseline(str(model), str(labels)) == pytest.approx(expected, abs=1e-12)


def test_a_submission_row_with_a_field_too_many_is_named_by_line(case):
    tmp_path, seq_ids, _, p, labels = case
    lines = write(tmp_path, "ok.csv", seq_ids, p).read_text().splitlines()
    width = len(CLASSES) + 1
    shifted = tmp_path / "shifted.csv"
    shifted.write_text("\n".join([*lines[:3], lines[3].replace(",", ",0.5,", 1), *lines[4:]]) + "\n")
    with pytest.raises(ContractError, match=rf"shifted.csv:4: has {width + 1} fields where the header has {width}"):
        evaluate_submission(shifted, labels)
    trailing = tmp_path / "trailing.csv"  # a spreadsheet export: a comma ends every row
    trailing.write_text("".join(line + ",\n" for line in lines))
    assert evaluate_submission(trailing, labels).loss == evaluate_submission(tmp_path / "ok.csv", labels).loss
