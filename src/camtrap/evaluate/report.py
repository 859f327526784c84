"""Reports of a training run and its submission: curves, per-class chart, worst-loss gallery, index.

What a run and a submission look like, as files a person opens in a browser:

* ``curves.png``: one row of panels per stage (train/validation loss, the competition metric next to the
  class-prior baseline, the LR), x = epoch, from the run's ``metrics.csv`` (:mod:`.curves`).
* ``per_class.csv`` / ``summary.json`` (written by :func:`camtrap.evaluate.submission.write_report`) and
  ``per_class.png``: each class's contribution to the metric, largest first.
* ``gallery.html`` / ``gallery.png`` / ``gallery.csv``: the sequences with the highest per-sequence loss,
  with their frames, true labels and top-3 predictions; thumbnails under ``gallery/`` (:mod:`.gallery`).
* ``index.html`` linking all of it.

Nothing here recomputes the metric: the submission is validated and scored by
:func:`camtrap.evaluate.submission.evaluate_submission`, so the report shows the very number
``evaluate.py`` prints. Nothing here imports torch either: a report is made on any machine that can read
the run folder.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from camtrap.data import storage
from camtrap.data.contract import read_metadata
from camtrap.errors import InputError
from camtrap.evaluate.curves import plot_curves, read_run_metrics, stage_summaries
from camtrap.evaluate.gallery import (
    build_gallery,
    gallery_frame,
    gallery_html,
    plot_gallery,
    unavailable_images,
    write_thumbnails,
)
from camtrap.evaluate.pages import (
    CURVES_PNG,
    GALLERY_CSV,
    GALLERY_DIR,
    GALLERY_HTML,
    GALLERY_PNG,
    INDEX_HTML,
    PER_CLASS_PNG,
    render_page,
)
from camtrap.evaluate.submission import (
    PER_CLASS_CSV,
    SUMMARY_JSON,
    EvaluationResult,
    evaluate_submission,
    write_report,
)

#: Sequences in the worst-loss gallery unless told otherwise: a page that loads in a second.
DEFAULT_TOP = 24
#: Resolution of the charts; the contact sheet is lower, its thumbnails are the detail and they are small.
PLOT_DPI = 100
GALLERY_DPI = 80
#: ``per_class.png``: width, height of the title and axis, and height per class bar, in inches.
PER_CLASS_WIDTH_IN = 9.0
PER_CLASS_BASE_IN = 1.2
PER_CLASS_BAR_IN = 0.22
INDEX_TEMPLATE = "index.html.j2"


def png_bytes(fig: Figure, dpi: int = PLOT_DPI) -> bytes:
    """``fig`` as PNG bytes, so it can be written atomically to a path or a URI alike."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def plot_per_class(result: EvaluationResult) -> Figure:
    """Horizontal bars of each class's contribution to the metric, largest on top, share in %.

    Contributions sum to the metric, so the chart shows where a model loses most, which a mean per-class
    loss hides: a rare class can be badly predicted and still cost little.
    """
    table = result.per_class
    fig = Figure(figsize=(PER_CLASS_WIDTH_IN, PER_CLASS_BASE_IN + PER_CLASS_BAR_IN * len(table)),
                 layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(table))
    ax.barh(y, table["contribution"], color="C0")
    ax.set_yticks(y, [f"{c} ({p})" for c, p in zip(table["class"], table["positives"])], fontsize=8)
    ax.invert_yaxis()
    for yi, (v, share) in enumerate(zip(table["contribution"], table["share"])):
        ax.text(v, yi, f" {100 * share:.1f}%", va="center", fontsize=7)
    ax.set_xlabel("contribution = class's summed cell loss / (sequences x classes)")
    ax.set_title(
        f"per-class contribution to the metric {result.loss:.6f} "
        f"({result.num_sequences} sequences; label = class (positives))",
        fontsize=10,
    )
    ax.margins(x=0.12)  # room for the share labels right of the longest bar
    ax.grid(axis="x", alpha=0.3)
    return fig


@dataclass
class ReportSummary:
    """What :func:`make_report` wrote; ``str()`` is what the report job prints."""

    out_dir: str
    run_dir: str
    files: list[str] = field(default_factory=list)
    metric: float | None = None
    num_sequences: int | None = None
    gallery_size: int = 0
    unavailable_images: int = 0
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"report: {self.run_dir} -> {self.out_dir}"]
        if self.metric is not None:
            lines.append(f"  submission: {self.num_sequences} sequences, metric {self.metric:.6f}")
        if self.gallery_size:
            lines.append(f"  gallery: {self.gallery_size} worst sequences, "
                         f"{self.unavailable_images} frame(s) shown as placeholders")
        lines.extend(f"  note: {n}" for n in self.notes)
        # Dozens of thumbnails would drown the other lines: they are counted, not listed.
        thumbs = [f for f in self.files if posixpath.basename(posixpath.dirname(f)) == GALLERY_DIR]
        lines.extend(f"  wrote {f}" for f in self.files if f not in thumbs)
        if thumbs:
            lines.append(f"  wrote {len(thumbs)} thumbnails under {storage.join(self.out_dir, GALLERY_DIR)}")
        lines.append(f"  open {storage.join(self.out_dir, INDEX_HTML)}")
        return "\n".join(lines)


def index_html(run_dir: str, history: pd.DataFrame, history_source: str, result: EvaluationResult | None,
               links: Sequence[tuple[str, str]]) -> str:
    """``index.html``: the header (run, metric, sequences), the stage table, every file, then the plots.

    Args:
        run_dir: The run folder, named in the header.
        history: The run's epochs, as :func:`~camtrap.evaluate.curves.read_run_metrics` returns them.
        history_source: Where ``history`` was read from.
        result: The scored submission, or None for a report of the curves alone.
        links: ``(href, what)`` of every file, relative to the report folder, in the order they are listed;
            the PNGs among them are shown inline too.
    """
    return render_page(INDEX_TEMPLATE, run_dir=run_dir, history_source=history_source, result=result,
                       stages=stage_summaries(history), links=list(links))


def _check_inputs(submission: str | None, labels: str | None, metadata: object, images_dir: str | None) -> None:
    """Refuse an option combination that would silently drop part of the report."""
    if (submission is None) != (labels is None):
        raise InputError("--submission and --labels go together: the per-class table needs both")
    if (metadata is not None or images_dir is not None) and (submission is None or metadata is None or images_dir is None):
        raise InputError("the gallery needs --submission, --labels, --metadata and --images-dir together")


def make_report(
    run_dir: str,
    out_dir: str,
    submission: str | None = None,
    labels: str | None = None,
    metadata: str | Sequence[str] | None = None,
    images_dir: str | None = None,
    top: int = DEFAULT_TOP,
) -> ReportSummary:
    """Write the report of ``run_dir`` (and of ``submission`` scored on ``labels``) under ``out_dir``.

    Curves always; the per-class chart with ``submission`` and ``labels``; the gallery when
    ``metadata`` and ``images_dir`` are given too. Every input is read and checked before anything is
    written, so a bad file leaves no half report: raises :class:`~camtrap.errors.InputError` (or its
    :class:`~camtrap.data.contract.ContractError`) naming the file and the reason for any input that cannot
    be used. An image that cannot be read is a placeholder instead.

    Args:
        run_dir: The run folder written by ``train.py --out``.
        out_dir: The report folder or URI; made if missing.
        submission: A submission CSV written by ``predict.py``.
        labels: The labels CSV of the submission's sequences; required with ``submission``.
        metadata: Metadata CSV(s) (``seq_id``, ``file_name``) of those sequences, for the gallery.
        images_dir: The images folder or URI the metadata's file names are relative to.
        top: Sequences in the worst-loss gallery.

    Returns:
        What was written; ``str()`` of it is the job's output.
    """
    run_dir, out_dir = str(run_dir), str(out_dir)
    _check_inputs(submission, labels, metadata, images_dir)
    history, source = read_run_metrics(run_dir)
    result = evaluate_submission(submission, labels) if submission is not None else None
    meta = read_metadata(metadata) if metadata is not None else None

    storage.makedirs(out_dir)
    summary = ReportSummary(out_dir=out_dir, run_dir=run_dir)
    links: list[tuple[str, str]] = []

    def save(name: str, data: bytes, what: str) -> None:
        path = storage.join(out_dir, name)
        storage.write_bytes_atomic(path, data)
        summary.files.append(path)
        links.append((name, what))

    save(CURVES_PNG, png_bytes(plot_curves(history)), "training curves per stage (loss, metric vs prior, LR)")
    if result is not None:
        summary.metric, summary.num_sequences = result.loss, result.num_sequences
        summary.files.extend(write_report(result, out_dir))
        links += [(PER_CLASS_CSV, "per-class loss table, sorted by contribution (contributions sum to the metric)"),
                  (SUMMARY_JSON, "the metric and counts")]
        save(PER_CLASS_PNG, png_bytes(plot_per_class(result)), "per-class contribution chart")
    if result is not None and meta is not None and images_dir is not None:
        items = build_gallery(result.classes, result.y_true, result.probabilities, list(result.seq_ids), meta,
                              images_dir, top)
        summary.files.extend(write_thumbnails(items, out_dir))
        summary.gallery_size = len(items)
        summary.unavailable_images = unavailable_images(items)
        save(GALLERY_HTML, gallery_html(items, result, images_dir).encode(),
             f"the {len(items)} worst sequences with their frames")
        save(GALLERY_PNG, png_bytes(plot_gallery(items), dpi=GALLERY_DPI), "contact sheet of the same sequences")
        save(GALLERY_CSV, gallery_frame(items).to_csv(index=False).encode(), "gallery order, seq_ids and losses")
    elif result is not None:
        summary.notes.append("no gallery: it needs --metadata and --images-dir")
    index_path = storage.join(out_dir, INDEX_HTML)
    storage.write_bytes_atomic(index_path, index_html(run_dir, history, source, result, links).encode())
    summary.files.append(index_path)
    return summary
