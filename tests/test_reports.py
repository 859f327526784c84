"""The report job: curves from a run training's own writers made, per-class table and worst-loss gallery
checked against an independent numpy metric, escaping, placeholders for bad images, and exit 2 on bad input.

No Ray: the run directory is written by ``camtrap.train.driver``'s epoch and history functions on made-up
validation outputs, so its columns are exactly what a real run writes.
"""

from __future__ import annotations

import csv
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from jobs import load_job
from PIL import Image

from camtrap.data.classes import COMPETITION_CLASSES
from camtrap.evaluate.curves import CURVE_COLUMNS, read_run_metrics
from camtrap.evaluate.gallery import THUMB_LONG_SIDE

CLASSES = list(COMPETITION_CLASSES)
EPS = 1e-15
STAGES = {"s96": 3, "s128": 2}  # recipe order; alphabetical order is the reverse
# seq_ids and file names a browser would misread if they were not escaped.
ODD_SEQ = "SER_S1#<b>&'\"odd\""
ODD_FILE = "S1/odd & <name>'s.jpg"


# ---------------------------------------------------------------------------------------------------
# Fixtures: a run directory and a tiny scored dataset
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A two-stage run as ``run_training`` leaves it: ``metrics.csv``/``.json`` at the root (via
    ``write_history``), ``stages/<name>/metrics.csv`` and ``recipe.yaml``."""
    from camtrap.run_layout import RunLayout
    from camtrap.train.driver import write_history
    from camtrap.train.loop import epoch_metrics

    out = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    targets = (rng.random((6, len(CLASSES))) < 0.05).astype(np.float32)  # one validation set for the run
    priors = np.full(len(CLASSES), 0.02).tolist()
    history = []
    for stage, epochs in STAGES.items():
        stage_history = []
        for epoch in range(epochs):
            probs = rng.uniform(0.01, 0.5, (6, len(CLASSES)))
            rows = [(["a", "a", "b", "c", "c", "d"], probs, targets)]
            totals = [(0.5 / (epoch + 1) * 32, 32, 4.0)]
            stage_history.append(epoch_metrics(rows, totals, CLASSES, priors, 1e-3 / (epoch + 1), epoch, stage))
        (out / "stages" / stage).mkdir(parents=True)
        pd.DataFrame(stage_history).to_csv(out / "stages" / stage / "metrics.csv", index=False)
        history.extend(stage_history)
    write_history(RunLayout(str(out)), history)
    (out / "recipe.yaml").write_text("name: t\nmodel: resnet10t\nstages:\n  - name: s96\n  - name: s128\n")
    return out


def _jpeg(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="JPEG")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """12 sequences of 1-3 small JPEGs; one sequence's file is missing, one is not an image, one has no
    metadata row. Those three (and the odd seq_id) get a confident mistake, so they top the gallery."""
    root = tmp_path_factory.mktemp("data")
    images = root / "images"
    rng = np.random.default_rng(1)
    n = 12
    seq_ids = [f"SER_S1#{i:03d}" for i in range(n)]
    seq_ids[4] = ODD_SEQ
    seq_ids[8] = "SER_S1#006z"  # sorts before row 7's seq_id, though it comes after it in every file
    y = np.zeros((n, len(CLASSES)), dtype=np.int64)
    y[:, CLASSES.index("empty")] = 1
    for i in (1, 3, 4, 6, 9):
        y[i, CLASSES.index("empty")] = 0
        y[i, rng.choice(len(CLASSES))] = 1
    y[9, CLASSES.index("zebra")] = 1  # two species
    p = rng.uniform(0.001, 0.3, (n, len(CLASSES)))
    p[y == 1] = rng.uniform(0.5, 0.99, int(y.sum()))
    # Confident mistakes (a 0 on a true class: clipped to 1e-15, about 34.5 for that cell).
    for i in (2, 4, 5, 7, 11):
        p[i, np.flatnonzero(y[i])[0]] = 0.0
    # Sequences 7 and 8: the same labels and probabilities, so the same loss; the tie goes by seq_id.
    y[8], p[8] = y[7], p[7]

    meta_rows = []
    for i, s in enumerate(seq_ids):
        if i == 11:
            continue  # no image listed for this sequence
        for k in range(1 + i % 3):
            name = ODD_FILE if (i, k) == (4, 0) else f"S1/seq{i:03d}_{k}.jpg"
            meta_rows.append((s, name))
            if i == 2 and k == 0:
                continue  # listed, never written: a missing file
            if i == 5 and k == 0:
                (images / name).parent.mkdir(parents=True, exist_ok=True)
                (images / name).write_bytes(b"this is not a jpeg")
                continue
            _jpeg(images / name, (64, 48) if k % 2 == 0 else (48, 64), (20 * i, 100, 200 - 10 * k))
    meta = root / "metadata.csv"
    pd.DataFrame(meta_rows, columns=["seq_id", "file_name"]).to_csv(meta, index=False)

    labels = root / "labels.csv"
    lab = pd.DataFrame(y, columns=CLASSES)
    lab.insert(0, "seq_id", seq_ids)
    lab.to_csv(labels, index=False, quoting=csv.QUOTE_NONNUMERIC)

    # The submission: rows shuffled and class columns reversed (evaluation matches by name).
    perm = rng.permutation(n)
    sub = pd.DataFrame(p[perm][:, ::-1], columns=CLASSES[::-1])
    sub.insert(0, "seq_id", [seq_ids[i] for i in perm])
    submission = root / "submission.csv"
    sub.to_csv(submission, index=False)
    return {"seq_ids": seq_ids, "y": y, "p": p, "labels": labels, "submission": submission,
            "metadata": meta, "images": images}


def numpy_cells(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The metric's cells, written out independently of camtrap.metrics."""
    q = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    return -(y * np.log(q) + (1 - y) * np.log(1 - q))


class Page(HTMLParser):
    """Collects links and gallery items, and checks that every non-void element is closed in order."""

    VOID = frozenset({"img", "br", "meta", "link", "hr", "input"})

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.items: list[dict] = []
        self.placeholders: list[str] = []
        self._in_placeholder = 0
        self.feed(text)
        self.close()
        if self.stack:
            self.errors.append(f"unclosed {self.stack}")

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        if tag == "img":
            self.srcs.append(a["src"])
        if tag == "figure" and "data-seq-id" in a:
            self.items.append({"seq_id": a["data-seq-id"], "loss": float(a["data-loss"]), "rank": int(a["data-rank"])})
        if tag == "div" and "placeholder" in a.get("class", ""):
            self._in_placeholder = len(self.stack)
            self.placeholders.append("")

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        if self._in_placeholder == len(self.stack):
            self._in_placeholder = 0
        self.stack.pop()

    def handle_data(self, data):
        if self._in_placeholder:
            self.placeholders[-1] += data


def parse(path: Path) -> Page:
    page = Page(path.read_text(encoding="utf-8"))
    assert not page.errors, f"{path.name}: {page.errors}"
    return page


def check_png(path: Path, min_w: int = 400, min_h: int = 200) -> None:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert min_w <= im.width <= 8000 and min_h <= im.height <= 12000, (path.name, im.size)


@pytest.fixture(scope="module")
def full_report(run_dir, dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    top = len(dataset["seq_ids"]) - 2
    rc = load_job("report").main([
        "--run", str(run_dir), "--submission", str(dataset["submission"]), "--labels", str(dataset["labels"]),
        "--metadata", str(dataset["metadata"]), "--images-dir", str(dataset["images"]),
        "--top", str(top), "--out", str(out),
    ])
    assert rc == 0
    return out, top


# ---------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------


def test_run_columns_are_what_training_writes(run_dir):
    written = pd.read_csv(run_dir / "metrics.csv")
    assert set(CURVE_COLUMNS) <= set(written.columns)
    history, source = read_run_metrics(str(run_dir))
    assert source.endswith("metrics.csv") and len(history) == sum(STAGES.values())


def test_stage_metrics_are_read_in_recipe_order_when_the_run_has_no_root_csv(run_dir, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    shutil.copytree(run_dir / "stages", partial / "stages")
    shutil.copy(run_dir / "recipe.yaml", partial / "recipe.yaml")
    history, source = read_run_metrics(str(partial))
    assert list(pd.unique(history["stage"])) == list(STAGES)  # s96 before s128, as in recipe.yaml
    assert "stages" in source and len(history) == sum(STAGES.values())


def test_index_links_every_file_and_pages_are_well_formed(full_report, dataset, run_dir):
    out, _ = full_report
    index = parse(out / "index.html")
    top_level = {p.name for p in out.iterdir() if p.is_file()} - {"index.html"}
    assert top_level == {"curves.png", "per_class.csv", "per_class.png", "summary.json",
                         "gallery.html", "gallery.png", "gallery.csv"}
    assert top_level <= set(index.hrefs)
    assert all((out / h).is_file() for h in index.hrefs + index.srcs)  # relative, and they resolve
    text = (out / "index.html").read_text()
    assert str(run_dir) in text and f"{len(dataset['seq_ids'])} sequences" in text
    gallery = parse(out / "gallery.html")
    thumbs = sorted(f"gallery/{p.name}" for p in (out / "gallery").iterdir())
    assert thumbs and sorted(gallery.srcs) == thumbs
    assert "index.html" in gallery.hrefs and all((out / h).is_file() for h in gallery.hrefs)
    for name in ("curves.png", "per_class.png", "gallery.png"):
        check_png(out / name)
    for t in thumbs:
        with Image.open(out / t) as im:
            assert im.format == "JPEG" and max(im.size) <= THUMB_LONG_SIDE


def test_per_class_table_is_sorted_and_sums_to_the_metric(full_report, dataset):
    out, _ = full_report
    table = pd.read_csv(out / "per_class.csv")
    cells = numpy_cells(dataset["y"], dataset["p"])
    metric = cells.mean()
    assert len(table) == len(CLASSES) and set(table["class"]) == set(CLASSES)
    assert (np.diff(table["contribution"].to_numpy()) <= 0).all()
    assert table["contribution"].sum() == pytest.approx(metric, rel=1e-9)
    expected = dict(zip(CLASSES, cells.sum(axis=0) / cells.size))
    for cls, value in zip(table["class"], table["contribution"]):
        assert value == pytest.approx(expected[cls], rel=1e-9, abs=1e-15)
    assert f"{metric:.6f}" in (out / "index.html").read_text()


def test_gallery_order_and_losses_match_numpy(full_report, dataset):
    out, top = full_report
    seq_ids = dataset["seq_ids"]
    losses = numpy_cells(dataset["y"], dataset["p"]).mean(axis=1)
    assert losses[7] == losses[8]  # the planted tie
    expected = sorted(range(len(seq_ids)), key=lambda i: (-losses[i], seq_ids[i]))[:top]
    items = parse(out / "gallery.html").items
    assert [it["seq_id"] for it in items] == [seq_ids[i] for i in expected]  # ODD_SEQ round-trips escaped
    assert [it["rank"] for it in items] == list(range(1, top + 1))
    assert [it["loss"] for it in items] == pytest.approx([losses[i] for i in expected], rel=1e-9)
    table = pd.read_csv(out / "gallery.csv", dtype={"seq_id": str}, keep_default_na=False)
    assert list(table["seq_id"]) == [it["seq_id"] for it in items]
    assert table["loss"].to_numpy() == pytest.approx([it["loss"] for it in items], rel=1e-12)
    assert expected.index(8) + 1 == expected.index(7)  # tie: "SER_S1#006z" first, though listed second


def test_unreadable_images_become_placeholders(full_report, dataset):
    out, _ = full_report
    page = parse(out / "gallery.html")
    text = "\n".join(page.placeholders)
    assert "missing file" in text and "seq002_0.jpg" in text
    assert "cannot decode" in text and "seq005_0.jpg" in text
    assert "no image of this sequence" in text
    table = pd.read_csv(out / "gallery.csv", dtype={"seq_id": str}, keep_default_na=False).set_index("seq_id")
    seq_ids = dataset["seq_ids"]
    assert table.loc[seq_ids[2], "unavailable_images"] == 1 and table.loc[seq_ids[5], "unavailable_images"] == 1
    assert table.loc[seq_ids[11], "images"] == 0
    assert ODD_FILE in {a for a in _img_alts(out / "gallery.html")}  # file names escaped, then read back


def _img_alts(path: Path) -> list[str]:
    alts: list[str] = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "img":
                alts.append(dict(attrs).get("alt", ""))

    P().feed(path.read_text())
    return alts


def test_without_a_submission_only_curves_and_index(run_dir, tmp_path, capsys):
    out = tmp_path / "curves_only"
    assert load_job("report").main(["--run", str(run_dir), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"curves.png", "index.html"}
    index = parse(out / "index.html")
    assert "curves.png" in index.hrefs
    check_png(out / "curves.png", min_h=2 * 200)  # one row of panels per stage
    printed = capsys.readouterr().out
    assert str(out / "curves.png") in printed and str(out / "index.html") in printed


def test_missing_run_dir_exits_2_naming_the_path(tmp_path, capsys):
    missing = tmp_path / "no_such_run"
    assert load_job("report").main(["--run", str(missing), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "not found" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_bad_inputs_exit_2_naming_the_file(run_dir, dataset, tmp_path, capsys):
    job = load_job("report")
    bad_run = tmp_path / "bad_run"
    bad_run.mkdir()
    pd.read_csv(run_dir / "metrics.csv").drop(columns=["val_metric"]).to_csv(bad_run / "metrics.csv", index=False)
    assert job.main(["--run", str(bad_run), "--out", str(tmp_path / "r1")]) == 2
    err = capsys.readouterr().err
    assert str(bad_run / "metrics.csv") in err and "val_metric" in err

    short = tmp_path / "short.csv"
    pd.read_csv(dataset["submission"], dtype={"seq_id": str}).iloc[1:].to_csv(short, index=False)
    assert job.main(["--run", str(run_dir), "--submission", str(short), "--labels", str(dataset["labels"]),
                     "--out", str(tmp_path / "r2")]) == 2
    assert str(short) in capsys.readouterr().err

    assert job.main(["--run", str(run_dir), "--submission", str(dataset["submission"]),
                     "--out", str(tmp_path / "r3")]) == 2
    assert "--labels" in capsys.readouterr().err

    missing_meta = tmp_path / "no_metadata.csv"
    assert job.main(["--run", str(run_dir), "--submission", str(dataset["submission"]), "--labels",
                     str(dataset["labels"]), "--metadata", str(missing_meta), "--images-dir", str(dataset["images"]),
                     "--out", str(tmp_path / "r4")]) == 2
    assert str(missing_meta) in capsys.readouterr().err
    assert not (tmp_path / "r4").exists()  # inputs are checked before anything is written
