"""Reports of a training run and its submission: curves, per-class chart, worst-loss gallery, index.

What a run and a submission look like, as files a person opens in a browser:

* ``curves.png``: one row of panels per stage (train/validation loss, the competition metric next to the
  class-prior baseline, the LR), x = epoch, from the run's ``metrics.csv``.
* ``per_class.csv`` / ``summary.json`` (written by :func:`camtrap.evaluate.write_report`) and
  ``per_class.png``: each class's contribution to the metric, largest first.
* ``gallery.html`` / ``gallery.png`` / ``gallery.csv``: the sequences with the highest per-sequence loss,
  with their frames, true labels and top-3 predictions; thumbnails under ``gallery/``.
* ``index.html`` linking all of it.

Nothing here recomputes the metric: the submission is validated and scored by
:func:`camtrap.evaluate.evaluate_submission`, and per-sequence losses are row means of
:func:`camtrap.metrics.log_loss_cells`, so the gallery's losses add up to the very number ``evaluate.py``
prints. Plots use matplotlib's object-oriented ``Figure`` (no pyplot, no global state), so reports can
be made from threads or Ray tasks without a display.
"""

from __future__ import annotations

import html
import io
import os
import posixpath
import textwrap
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from camtrap.data import storage
from camtrap.data.classes import FILE_NAME, SEQ_ID
from camtrap.data.contract import ContractError, Metadata, read_csv_file, read_metadata
from camtrap.data.imageio import ImageDecodeError, decode_image
from camtrap.errors import InputError
from camtrap.evaluate.submission import EvaluationResult, evaluate_submission, write_report
from camtrap.metrics import log_loss_cells

# Columns of a run's metrics.csv: the keys of camtrap.training._epoch_metrics (tests check they still are).
# Named here, not imported, so making a report does not import torch.
STAGE = "stage"
EPOCH = "epoch"
TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"
VAL_METRIC = "val_metric"
VAL_PRIOR_METRIC = "val_prior_metric"
LR = "lr"
CURVE_COLUMNS: tuple[str, ...] = (STAGE, EPOCH, TRAIN_LOSS, VAL_LOSS, VAL_METRIC, VAL_PRIOR_METRIC, LR)

METRICS_FILE = "metrics.csv"
CURVES_PNG = "curves.png"
PER_CLASS_CSV = "per_class.csv"
PER_CLASS_PNG = "per_class.png"
SUMMARY_JSON = "summary.json"
GALLERY_HTML = "gallery.html"
GALLERY_PNG = "gallery.png"
GALLERY_CSV = "gallery.csv"
GALLERY_DIR = "gallery"
INDEX_HTML = "index.html"

#: Thumbnails' long side in pixels (HTML); the contact sheet scales them to :data:`SHEET_TILE_HEIGHT`.
THUMB_LONG_SIDE = 256
SHEET_TILE_HEIGHT = 120
#: Frames shown per sequence; Serengeti sequences have 1-3, a rare long one is cut with a note.
MAX_IMAGES_PER_SEQUENCE = 6
TOP_PREDICTIONS = 3
#: Threads that read and decode thumbnails: image reads from object storage are latency-bound.
IO_THREADS = 8


# ---------------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------------


def _read_metrics_csv(path: str) -> pd.DataFrame:
    frame = read_csv_file(path, text=False)
    missing = [c for c in CURVE_COLUMNS if c not in frame.columns]
    if missing:
        raise ContractError(
            f"{path}: missing column(s) {missing}; expected the columns training writes ({', '.join(CURVE_COLUMNS)})"
        )
    if frame.empty:
        raise ContractError(f"{path}: no epochs (header only)")
    frame[STAGE] = frame[STAGE].astype(str)
    for col in CURVE_COLUMNS[1:]:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & frame[col].notna()
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            raise ContractError(f"{path}:{line}: column '{col}': value {frame[col].iloc[line - 2]!r} is not a number")
        frame[col] = values
    return frame


def _stage_order(run_dir: str) -> list[str]:
    """Stage names in the order of the run's ``recipe.yaml`` (empty when it is missing or unreadable)."""
    path = storage.join(run_dir, "recipe.yaml")
    try:
        recipe = yaml.safe_load(storage.read_bytes(path))
        return [str(s["name"]) for s in recipe["stages"] if s.get("name") is not None]
    except Exception:  # noqa: BLE001 - the order is a nicety; sorting by name is the fallback
        return []


def read_run_metrics(run_dir: str) -> tuple[pd.DataFrame, str]:
    """Every epoch of every stage of a training run, and where it was read from.

    ``RUN_DIR/metrics.csv`` is written when training ends; a run that is still going (or was stopped) has
    only ``stages/<name>/metrics.csv`` for its finished stages, so those are read instead, in the order of
    ``recipe.yaml``. Raises :class:`~camtrap.errors.InputError` naming the path when there is nothing to read,
    :class:`ContractError` naming the line and column of a malformed file.
    """
    run_dir = str(run_dir)
    if not storage.exists(run_dir):
        raise InputError(f"{run_dir}: run directory not found")
    root = storage.join(run_dir, METRICS_FILE)
    if storage.exists(root):
        return _read_metrics_csv(root), root
    fs, inner = storage.get_fs(storage.join(run_dir, "stages"))
    found = sorted(posixpath.basename(posixpath.dirname(p)) for p in fs.glob(posixpath.join(inner, "*", METRICS_FILE)))
    if not found:
        raise InputError(
            f"{root}: not found, and no stages/<name>/{METRICS_FILE} either "
            f"(is {run_dir} a run directory written by train.py?)"
        )
    recipe_order = [s for s in _stage_order(run_dir) if s in found]
    order = recipe_order + [s for s in found if s not in recipe_order]
    paths = [storage.join(run_dir, "stages", s, METRICS_FILE) for s in order]
    return pd.concat([_read_metrics_csv(p) for p in paths], ignore_index=True), ", ".join(paths)


def stage_names(history: pd.DataFrame) -> list[str]:
    """Stages in the order they ran (first appearance in the history)."""
    return [str(s) for s in pd.unique(history[STAGE])]


def _png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def plot_curves(history: pd.DataFrame) -> Figure:
    """One row per stage: loss (train, val), competition metric vs the prior baseline, LR; x = epoch.

    Each stage gets its own y-scales: a later stage's losses are far below the first epochs' and would be
    flattened on a shared axis. Points are marked so a one-epoch stage still shows.
    """
    stages = stage_names(history)
    fig = Figure(figsize=(14, 3.2 * len(stages)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(stages), 3, squeeze=False))
    style = {"marker": "o", "markersize": 3}
    for row, name in zip(axes, stages):
        s = history[history[STAGE] == name].sort_values(EPOCH, kind="stable")
        x = s[EPOCH].to_numpy()
        ax_loss, ax_metric, ax_lr = row
        ax_loss.plot(x, s[TRAIN_LOSS], label="train loss", **style)
        ax_loss.plot(x, s[VAL_LOSS], label="validation loss (images)", **style)
        ax_loss.set_title(f"stage {name}: loss")
        ax_metric.plot(x, s[VAL_METRIC], label="validation metric (sequences)", color="C2", **style)
        # The baseline is a constant of the validation set, so it draws as a level line; plotted per
        # epoch all the same, so a run whose validation set changed would show it.
        prior = s[VAL_PRIOR_METRIC]
        ax_metric.plot(x, prior, color="grey", linestyle="--",
                       label=f"class-prior baseline {prior.iloc[-1]:.5f}" if prior.notna().any() else None)
        ax_metric.set_title(f"stage {name}: competition metric (lowest {s[VAL_METRIC].min():.5f})")
        ax_lr.plot(x, s[LR], color="C3", **style)
        if (s[LR] > 0).all():
            ax_lr.set_yscale("log")
        ax_lr.set_title(f"stage {name}: learning rate (end of epoch)")
        for ax in row:
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        ax_loss.legend(fontsize=8)
        ax_metric.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------------
# Per-class contributions
# ---------------------------------------------------------------------------------------------------


def plot_per_class(result: EvaluationResult) -> Figure:
    """Horizontal bars of each class's contribution to the metric, largest on top, share in %."""
    table = result.per_class
    fig = Figure(figsize=(9, 1.2 + 0.22 * len(table)), layout="constrained")
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
    ax.margins(x=0.12)
    ax.grid(axis="x", alpha=0.3)
    return fig


# ---------------------------------------------------------------------------------------------------
# Worst-loss gallery
# ---------------------------------------------------------------------------------------------------


@dataclass
class Thumbnail:
    """One frame of a gallery sequence: a JPEG thumbnail, or the reason there is none."""

    file_name: str
    image: Image.Image | None = None
    error: str | None = None  # the full reason, for the HTML
    problem: str | None = None  # a few words of it, for the contact sheet
    href: str | None = None  # relative to the report folder, once written


@dataclass
class GalleryItem:
    rank: int
    seq_id: str
    loss: float
    true_labels: list[tuple[str, float]]  # (class, predicted probability) for each positive class
    top: list[tuple[str, float]]  # the TOP_PREDICTIONS most probable classes
    images: list[Thumbnail] = field(default_factory=list)
    more_images: int = 0  # frames beyond MAX_IMAGES_PER_SEQUENCE, not shown


def sequence_losses(y_true: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Each sequence's loss: the mean over classes of its cells' binary log loss (their mean is the metric)."""
    return log_loss_cells(y_true, p).mean(axis=1)


def worst_sequences(seq_ids: Sequence[str], losses: np.ndarray, top: int) -> list[int]:
    """Row indices of the ``top`` highest losses; equal losses in seq_id order, so the gallery is stable."""
    frame = pd.DataFrame({"seq": [str(s) for s in seq_ids], "loss": np.asarray(losses, dtype=np.float64)})
    frame = frame.sort_values(["loss", "seq"], ascending=[False, True], kind="stable")
    return frame.index[: max(int(top), 0)].tolist()


def load_thumbnail(images_dir: str, file_name: str) -> Thumbnail:
    """Read, decode (EXIF, CMYK, 16-bit... as everywhere else) and shrink one frame; never raises."""
    path = storage.join(images_dir, file_name)
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError:
        return Thumbnail(file_name, error=f"missing file: {path}", problem="missing file")
    except Exception as e:  # noqa: BLE001 - any read failure becomes a placeholder with its reason
        return Thumbnail(file_name, error=f"cannot read {path}: {type(e).__name__}: {e}", problem="cannot read")
    try:
        img = decode_image(data)
    except ImageDecodeError as e:
        return Thumbnail(file_name, error=f"cannot decode {path}: {e}", problem="cannot decode")
    except Exception as e:  # noqa: BLE001
        return Thumbnail(file_name, error=f"cannot decode {path}: {type(e).__name__}: {e}", problem="cannot decode")
    img.thumbnail((THUMB_LONG_SIDE, THUMB_LONG_SIDE), Image.Resampling.LANCZOS)
    return Thumbnail(file_name, image=img)


def build_gallery(
    classes: Sequence[str],
    y_true: np.ndarray,
    p: np.ndarray,
    seq_ids: Sequence[str],
    metadata: Metadata,
    images_dir: str,
    top: int,
) -> list[GalleryItem]:
    """The ``top`` worst sequences with their thumbnails (placeholders for frames that cannot be shown).

    ``y_true`` and ``p`` are aligned: row ``i`` of both is sequence ``seq_ids[i]``, columns ``classes``.
    """
    classes = list(classes)
    losses = sequence_losses(y_true, p)
    frames = metadata.frame.groupby(SEQ_ID, sort=False)[FILE_NAME].apply(list).to_dict()
    items = []
    for rank, i in enumerate(worst_sequences(seq_ids, losses, top), start=1):
        order = np.argsort(-p[i], kind="stable")[:TOP_PREDICTIONS]
        names = frames.get(seq_ids[i], [])
        items.append(
            GalleryItem(
                rank=rank,
                seq_id=str(seq_ids[i]),
                loss=float(losses[i]),
                true_labels=[(classes[c], float(p[i, c])) for c in np.flatnonzero(y_true[i] > 0.5)],
                top=[(classes[c], float(p[i, c])) for c in order],
                images=[Thumbnail(n) for n in names[:MAX_IMAGES_PER_SEQUENCE]],
                more_images=max(len(names) - MAX_IMAGES_PER_SEQUENCE, 0),
            )
        )
        if not names:
            missing = f"no image of this sequence in {', '.join(metadata.sources)}"
            items[-1].images.append(Thumbnail("", error=missing, problem="no image listed"))
    todo = [t for item in items for t in item.images if t.error is None]
    with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
        loaded = list(pool.map(lambda t: load_thumbnail(images_dir, t.file_name), todo))
    for slot, done in zip(todo, loaded):
        slot.image, slot.error, slot.problem = done.image, done.error, done.problem
    return items


def _labels_text(pairs: Sequence[tuple[str, float]], empty: str = "(none)") -> str:
    return ", ".join(f"{c} {v:.3f}" for c, v in pairs) or empty


def gallery_frame(items: Sequence[GalleryItem]) -> pd.DataFrame:
    """``gallery.csv``: one row per gallery sequence, in gallery order; ``loss`` at full precision."""
    return pd.DataFrame(
        {
            "rank": [it.rank for it in items],
            SEQ_ID: [it.seq_id for it in items],
            "loss": [it.loss for it in items],
            "true_labels": [" ".join(c for c, _ in it.true_labels) for it in items],
            "top_predictions": [" ".join(f"{c}:{v:.6f}" for c, v in it.top) for it in items],
            "images": [sum(t.file_name != "" for t in it.images) + it.more_images for it in items],
            "unavailable_images": [sum(t.error is not None for t in it.images) for it in items],
        }
    )


def write_thumbnails(items: Sequence[GalleryItem], out_dir: str) -> list[str]:
    """Write each decoded thumbnail as ``gallery/<rank>_<frame>.jpg``; names never contain user strings."""
    written = []
    for it in items:
        for k, t in enumerate(it.images):
            if t.image is None:
                continue
            t.href = f"{GALLERY_DIR}/{it.rank:03d}_{k}.jpg"
            buf = io.BytesIO()
            t.image.save(buf, format="JPEG", quality=85)
            path = storage.join(out_dir, GALLERY_DIR, f"{it.rank:03d}_{k}.jpg")
            storage.write_bytes_atomic(path, buf.getvalue())
            written.append(path)
    return written


_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; }
.item { border: 1px solid #ccc; border-radius: 4px; padding: 8px; margin: 0; max-width: 820px; }
.frames { display: flex; gap: 4px; flex-wrap: wrap; }
.frames img { height: 160px; }
.placeholder { width: 200px; height: 150px; background: #eee; border: 1px dashed #999; font-size: 11px;
  overflow: auto; padding: 4px; box-sizing: border-box; color: #a00; word-break: break-all; }
.meta { font-size: 13px; margin-top: 6px; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
img.plot { max-width: 100%; }
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def gallery_html(items: Sequence[GalleryItem], header: str) -> str:
    """The gallery page; ``header`` is HTML (escape what it quotes). Every item carries ``data-rank``,
    ``data-seq-id`` and ``data-loss`` (full precision), for scripts and tests to read back."""
    parts = [
        "<h1>Worst-loss sequences</h1>",
        f"<p>{header}</p>",
        f'<p><a href="{INDEX_HTML}">back to the index</a> | <a href="{GALLERY_CSV}">{GALLERY_CSV}</a></p>',
        '<div class="gallery">',
    ]
    for it in items:
        frames = []
        for t in it.images:
            if t.href is not None:
                frames.append(f'<a href="{_e(t.href)}"><img src="{_e(t.href)}" alt="{_e(t.file_name)}" '
                              f'title="{_e(t.file_name)}"></a>')
            else:
                frames.append(f'<div class="placeholder" title="{_e(t.error)}">'
                              f"{_e(t.file_name) + '<br>' if t.file_name else ''}{_e(t.error)}</div>")
        if it.more_images:
            frames.append(f'<div class="placeholder">{it.more_images} more frame(s) not shown</div>')
        parts.append(
            f'<figure class="item" id="rank-{it.rank}" data-rank="{it.rank}" data-seq-id="{_e(it.seq_id)}" '
            f'data-loss="{it.loss!r}">\n<div class="frames">{"".join(frames)}</div>\n'
            f'<figcaption class="meta"><b>#{it.rank} {_e(it.seq_id)}</b> &mdash; loss {it.loss:.5f}<br>\n'
            f"true (predicted p): {_e(_labels_text(it.true_labels))}<br>\n"
            f"top {TOP_PREDICTIONS}: {_e(_labels_text(it.top))}</figcaption>\n</figure>"
        )
    parts.append("</div>")
    return _page("Worst-loss gallery", "\n".join(parts))


def _strip(item: GalleryItem) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """The sequence's frames side by side at :data:`SHEET_TILE_HEIGHT`, and (x centre, problem) of each
    grey placeholder tile, for the contact sheet to write the problem on."""
    h, gap = SHEET_TILE_HEIGHT, 4
    tiles, notes, x = [], [], 0.0
    for t in item.images:
        if t.image is not None:
            w = max(1, round(t.image.width * h / t.image.height))
            tiles.append(np.asarray(t.image.resize((w, h), Image.Resampling.BILINEAR)))
        else:
            w = round(h * 4 / 3)
            tiles.append(np.full((h, w, 3), 225, dtype=np.uint8))
            notes.append((x + w / 2, t.problem or "unavailable"))
        x += w + gap
        tiles.append(np.full((h, gap, 3), 255, dtype=np.uint8))
    return np.concatenate(tiles[:-1], axis=1), notes


def plot_gallery(items: Sequence[GalleryItem], columns: int = 3) -> Figure:
    """The contact sheet: one panel per sequence with its frames, loss, true labels and top-3."""
    strips = [_strip(it) for it in items]
    # Every strip padded to the widest, so frames show at one scale whatever a sequence's length.
    width = max((s.shape[1] for s, _ in strips), default=1)
    rows, panel_width = max(1, -(-len(items) // columns)), 5.5
    row_height = panel_width * SHEET_TILE_HEIGHT / width + 0.75  # the frames plus three lines of caption
    fig = Figure(figsize=(panel_width * columns, row_height * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, it, (strip, notes) in zip(axes, items, strips):
        pad = np.full((strip.shape[0], width - strip.shape[1], 3), 255, dtype=np.uint8)
        ax.imshow(np.concatenate([strip, pad], axis=1))
        for cx, reason in notes:
            ax.text(cx, SHEET_TILE_HEIGHT / 2, textwrap.fill(reason, 12), ha="center", va="center", fontsize=8,
                    color="#a00")
        more = f" (+{it.more_images} frames)" if it.more_images else ""
        title = (
            f"#{it.rank} {it.seq_id}  loss {it.loss:.4f}{more}\n"
            + textwrap.fill(f"true: {_labels_text(it.true_labels)}", 60) + "\n"
            + textwrap.fill(f"top {TOP_PREDICTIONS}: {_labels_text(it.top)}", 60)
        )
        ax.set_title(title, fontsize=8, loc="left")
    return fig


# ---------------------------------------------------------------------------------------------------
# Index and the whole report
# ---------------------------------------------------------------------------------------------------


@dataclass
class ReportSummary:
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
        thumbs = [f for f in self.files if os.path.basename(os.path.dirname(f)) == GALLERY_DIR]
        for f in self.files:
            if f not in thumbs:
                lines.append(f"  wrote {f}")
        if thumbs:
            lines.append(f"  wrote {len(thumbs)} thumbnails under {storage.join(self.out_dir, GALLERY_DIR)}")
        lines.append(f"  open {storage.join(self.out_dir, INDEX_HTML)}")
        return "\n".join(lines)


def _stage_table(history: pd.DataFrame) -> str:
    rows = []
    for name in stage_names(history):
        s = history[history[STAGE] == name]
        best = s.loc[s[VAL_LOSS].idxmin()] if s[VAL_LOSS].notna().any() else s.iloc[-1]
        rows.append(
            f"<tr><td style=\"text-align:left\">{_e(name)}</td><td>{len(s)}</td><td>{int(best[EPOCH])}</td>"
            f"<td>{best[VAL_LOSS]:.5f}</td><td>{best[VAL_METRIC]:.5f}</td><td>{best[VAL_PRIOR_METRIC]:.5f}</td></tr>"
        )
    return (
        "<table><tr><th>stage</th><th>epochs</th><th>best epoch (val loss)</th><th>val loss</th>"
        "<th>val metric</th><th>class-prior baseline</th></tr>\n" + "\n".join(rows) + "</table>"
    )


def index_html(run_dir: str, history: pd.DataFrame, history_source: str, result: EvaluationResult | None,
               links: Sequence[tuple[str, str]]) -> str:
    """``index.html``: the header (run, metric, sequences), the stage table, the plots and every file."""
    header = [
        f"<h1>Report: {_e(run_dir)}</h1>",
        "<ul>",
        f"<li>run: <code>{_e(run_dir)}</code> (epochs from <code>{_e(history_source)}</code>)</li>",
    ]
    if result is not None:
        header.append(
            f"<li>submission: <code>{_e(result.submission_path)}</code> against "
            f"<code>{_e(result.labels_path)}</code></li>"
            f"<li>metric (mean binary log loss): <b>{result.loss:.6f}</b> over {result.num_sequences} sequences "
            f"x {result.num_classes} classes</li>"
        )
    else:
        header.append("<li>no submission given: training curves only</li>")
    header.append("</ul>")
    body = [*header, "<h2>Stages</h2>", _stage_table(history), "<h2>Files</h2>", "<ul>"]
    body += [f'<li><a href="{_e(href)}">{_e(href)}</a>: {_e(what)}</li>' for href, what in links]
    body.append("</ul>")
    for href, _ in links:
        if href.endswith(".png"):
            body.append(f'<h2>{_e(href)}</h2>\n<a href="{_e(href)}"><img class="plot" src="{_e(href)}" '
                        f'alt="{_e(href)}"></a>')
    return _page(f"Report: {run_dir}", "\n".join(body))


def make_report(
    run_dir: str,
    out_dir: str,
    submission: str | None = None,
    labels: str | None = None,
    metadata: str | Sequence[str] | None = None,
    images_dir: str | None = None,
    top: int = 24,
) -> ReportSummary:
    """Write the report of ``run_dir`` (and of ``submission`` scored on ``labels``) under ``out_dir``.

    Curves always; the per-class chart with ``submission`` and ``labels``; the gallery when
    ``metadata`` and ``images_dir`` are given too. Raises :class:`~camtrap.errors.InputError` (or its
    :class:`ContractError`) naming the file and the reason for any input that cannot be used, before
    writing anything; an image that cannot be read is a placeholder instead.
    """
    run_dir, out_dir = str(run_dir), str(out_dir)
    if (submission is None) != (labels is None):
        raise InputError("--submission and --labels go together: the per-class table needs both")
    if (metadata is not None or images_dir is not None) and (submission is None or metadata is None or images_dir is None):
        raise InputError("the gallery needs --submission, --labels, --metadata and --images-dir together")
    # Every input is read and checked before anything is written: a bad file leaves no half report.
    history, source = read_run_metrics(run_dir)
    result = evaluate_submission(submission, labels) if submission is not None else None
    if result is not None and metadata is not None:
        meta = read_metadata(metadata)

    storage.makedirs(out_dir)
    summary = ReportSummary(out_dir=out_dir, run_dir=run_dir)
    links: list[tuple[str, str]] = []

    def save(name: str, data: bytes, what: str) -> None:
        path = storage.join(out_dir, name)
        storage.write_bytes_atomic(path, data)
        summary.files.append(path)
        links.append((name, what))

    save(CURVES_PNG, _png_bytes(plot_curves(history)), "training curves per stage (loss, metric vs prior, LR)")
    if result is not None:
        summary.metric, summary.num_sequences = result.loss, result.num_sequences
        summary.files.extend(write_report(result, out_dir))
        links += [(PER_CLASS_CSV, "per-class loss table, sorted by contribution (contributions sum to the metric)"),
                  (SUMMARY_JSON, "the metric and counts")]
        save(PER_CLASS_PNG, _png_bytes(plot_per_class(result)), "per-class contribution chart")
    if result is not None and metadata is not None:
        items = build_gallery(result.classes, result.y_true, result.probabilities, list(result.seq_ids), meta,
                              images_dir, top)
        summary.files.extend(write_thumbnails(items, out_dir))
        summary.gallery_size = len(items)
        summary.unavailable_images = sum(t.error is not None for it in items for t in it.images)
        header = (f"The {len(items)} sequences with the highest loss (mean over the {len(result.classes)} classes "
                  f"of the binary log loss), of {result.num_sequences}; metric {result.loss:.6f}. "
                  f"Images from <code>{_e(images_dir)}</code>.")
        save(GALLERY_HTML, gallery_html(items, header).encode(), f"the {len(items)} worst sequences with their frames")
        save(GALLERY_PNG, _png_bytes(plot_gallery(items), dpi=80), "contact sheet of the same sequences")
        save(GALLERY_CSV, gallery_frame(items).to_csv(index=False).encode(), "gallery order, seq_ids and losses")
    elif result is not None:
        summary.notes.append("no gallery: it needs --metadata and --images-dir")
    index = index_html(run_dir, history, source, result, links)
    storage.write_bytes_atomic(storage.join(out_dir, INDEX_HTML), index.encode())
    summary.files.append(storage.join(out_dir, INDEX_HTML))
    return summary
