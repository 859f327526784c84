"""The worst-loss gallery: the sequences a model gets most wrong, with their frames, labels and predictions.

Three views of the same ranked list: ``gallery.html`` (thumbnails under ``gallery/``, full paths and
reasons on hover), ``gallery.png`` (a contact sheet to paste into a discussion) and ``gallery.csv`` (seq_ids
and losses at full precision, for scripts). A sequence's loss is the row mean of
:func:`camtrap.metrics.log_loss_cells`, so the gallery's losses average to the very metric ``evaluate.py``
prints. A frame that cannot be shown (missing, unreadable, not an image) becomes a placeholder that says
why: the gallery is for finding such problems, so it must not stop at the first one.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from camtrap.data import storage
from camtrap.data.classes import FILE_NAME, SEQ_ID
from camtrap.data.contract import Metadata
from camtrap.data.imageio import ImageDecodeError, decode_image
from camtrap.evaluate.pages import GALLERY_CSV, GALLERY_DIR, INDEX_HTML, render_page
from camtrap.evaluate.submission import EvaluationResult
from camtrap.metrics import log_loss_cells

#: Thumbnails' long side in pixels: sharp enough to spot an animal, small enough for dozens on a page.
THUMB_LONG_SIDE = 256
THUMB_JPEG_QUALITY = 85
#: Frames shown per sequence; Serengeti sequences have 1-3, a rare long one is cut with a note.
MAX_IMAGES_PER_SEQUENCE = 6
TOP_PREDICTIONS = 3
#: Labels are 0/1; read as floats, a cell above this is a positive class.
POSITIVE = 0.5
#: Threads that read and decode thumbnails: image reads from object storage are latency-bound.
IO_THREADS = 8

# The contact sheet: frames scaled to one tile height, placeholders grey tiles of a typical frame's shape.
SHEET_TILE_HEIGHT = 120
SHEET_TILE_GAP = 4
SHEET_PLACEHOLDER_ASPECT = 4 / 3
SHEET_COLUMNS = 3
SHEET_PANEL_WIDTH_IN = 5.5
#: Height of a panel's three caption lines, in inches, above its frames.
SHEET_CAPTION_IN = 0.75
#: Characters per line of a caption, and of the reason written on a placeholder tile.
SHEET_CAPTION_WRAP = 60
SHEET_PROBLEM_WRAP = 12
WHITE, PLACEHOLDER_GREY = 255, 225
GALLERY_TEMPLATE = "gallery.html.j2"


@dataclass
class Thumbnail:
    """One frame of a gallery sequence: a decoded thumbnail, or the reason there is none."""

    file_name: str
    image: Image.Image | None = None
    error: str | None = None  # the full reason, for the HTML
    problem: str | None = None  # a few words of it, for the contact sheet
    href: str | None = None  # relative to the report folder, once written


def labels_text(pairs: Sequence[tuple[str, float]]) -> str:
    """``class p, class p`` at three decimals, or ``(none)``: one form for the page and the sheet."""
    return ", ".join(f"{c} {v:.3f}" for c, v in pairs) or "(none)"


@dataclass
class GalleryItem:
    """One ranked sequence of the gallery."""

    rank: int
    seq_id: str
    loss: float
    true_labels: list[tuple[str, float]]  # (class, predicted probability) for each positive class
    top: list[tuple[str, float]]  # the TOP_PREDICTIONS most probable classes
    images: list[Thumbnail] = field(default_factory=list)
    more_images: int = 0  # frames beyond MAX_IMAGES_PER_SEQUENCE, not shown

    @property
    def true_text(self) -> str:
        return labels_text(self.true_labels)

    @property
    def top_text(self) -> str:
        return labels_text(self.top)


def sequence_losses(y_true: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Each sequence's loss: the mean over classes of its cells' binary log loss (their mean is the metric)."""
    return log_loss_cells(y_true, p).mean(axis=1)


def worst_sequences(seq_ids: Sequence[str], losses: np.ndarray, top: int) -> list[int]:
    """Row indices of the ``top`` highest losses, highest first.

    Equal losses (a model often gives several sequences the same output) go in seq_id order, so the
    gallery is the same from run to run and two reports can be compared.

    Args:
        seq_ids: Each row's seq_id.
        losses: Each row's loss, as :func:`sequence_losses` computes it.
        top: How many rows at most; zero or less gives none.
    """
    frame = pd.DataFrame({"seq": [str(s) for s in seq_ids], "loss": np.asarray(losses, dtype=np.float64)})
    frame = frame.sort_values(["loss", "seq"], ascending=[False, True], kind="stable")
    return frame.index[: max(int(top), 0)].tolist()


def _reason(e: Exception) -> str:
    """An exception as a placeholder shows it: our own errors already say what is wrong; others get a type."""
    return str(e) if isinstance(e, ImageDecodeError) else f"{type(e).__name__}: {e}"


def load_thumbnail(images_dir: str, file_name: str) -> Thumbnail:
    """Read, decode (EXIF, CMYK, 16-bit... as everywhere else) and shrink one frame.

    Never raises: a frame that cannot be shown is a placeholder with its reason, so one bad file does not
    cost the whole gallery.

    Args:
        images_dir: The images folder or URI the metadata's file names are relative to.
        file_name: One frame's ``file_name`` from the metadata.

    Returns:
        A thumbnail whose long side is at most :data:`THUMB_LONG_SIDE`, or one with ``error`` and
        ``problem`` set.
    """
    path = storage.join(images_dir, file_name)
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError:
        return Thumbnail(file_name, error=f"missing file: {path}", problem="missing file")
    except Exception as e:  # noqa: BLE001 - any read failure becomes a placeholder with its reason
        return Thumbnail(file_name, error=f"cannot read {path}: {_reason(e)}", problem="cannot read")
    try:
        img = decode_image(data)
    except Exception as e:  # noqa: BLE001 - likewise any decode failure
        return Thumbnail(file_name, error=f"cannot decode {path}: {_reason(e)}", problem="cannot decode")
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

    Frames are read on :data:`IO_THREADS` threads, since a read from object storage mostly waits.

    Args:
        classes: The class of each column of ``y_true`` and ``p``.
        y_true: 0/1 labels, row ``i`` sequence ``seq_ids[i]``.
        p: Predicted probabilities, aligned with ``y_true``.
        seq_ids: Each row's seq_id.
        metadata: Which frames (``file_name``) belong to which ``seq_id``.
        images_dir: The folder or URI the file names are relative to.
        top: How many sequences the gallery shows.

    Returns:
        The gallery, worst first, its thumbnails decoded but not yet written (see :func:`write_thumbnails`).
    """
    classes = list(classes)
    losses = sequence_losses(y_true, p)
    frames = metadata.frame.groupby(SEQ_ID, sort=False)[FILE_NAME].apply(list).to_dict()
    items = []
    for rank, i in enumerate(worst_sequences(seq_ids, losses, top), start=1):
        order = np.argsort(-p[i], kind="stable")[:TOP_PREDICTIONS]
        names = frames.get(seq_ids[i], [])
        images = [Thumbnail(n) for n in names[:MAX_IMAGES_PER_SEQUENCE]]
        if not names:
            missing = f"no image of this sequence in {', '.join(metadata.sources)}"
            images.append(Thumbnail("", error=missing, problem="no image listed"))
        items.append(
            GalleryItem(
                rank=rank,
                seq_id=str(seq_ids[i]),
                loss=float(losses[i]),
                true_labels=[(classes[c], float(p[i, c])) for c in np.flatnonzero(y_true[i] > POSITIVE)],
                top=[(classes[c], float(p[i, c])) for c in order],
                images=images,
                more_images=max(len(names) - MAX_IMAGES_PER_SEQUENCE, 0),
            )
        )
    todo = [t for item in items for t in item.images if t.error is None]
    with ThreadPoolExecutor(max_workers=IO_THREADS) as pool:
        loaded = list(pool.map(lambda t: load_thumbnail(images_dir, t.file_name), todo))
    for slot, done in zip(todo, loaded):
        slot.image, slot.error, slot.problem = done.image, done.error, done.problem
    return items


def unavailable_images(items: Sequence[GalleryItem]) -> int:
    """Frames shown as placeholders, over the whole gallery."""
    return sum(t.error is not None for it in items for t in it.images)


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
            "unavailable_images": [unavailable_images([it]) for it in items],
        }
    )


def write_thumbnails(items: Sequence[GalleryItem], out_dir: str) -> list[str]:
    """Write each decoded thumbnail as ``gallery/<rank>_<frame>.jpg`` and set its ``href``.

    The names are made of numbers only, never of a file name from the metadata: those may hold anything
    (``..``, ``#``, ``?``) that would break a path or a link.

    Args:
        items: The gallery; each written thumbnail's ``href`` is set, relative to ``out_dir``.
        out_dir: The report folder or URI.

    Returns:
        The paths written.
    """
    written = []
    for it in items:
        for k, t in enumerate(it.images):
            if t.image is None:
                continue
            t.href = f"{GALLERY_DIR}/{it.rank:03d}_{k}.jpg"
            buf = io.BytesIO()
            t.image.save(buf, format="JPEG", quality=THUMB_JPEG_QUALITY)
            path = storage.join(out_dir, t.href)
            storage.write_bytes_atomic(path, buf.getvalue())
            written.append(path)
    return written


def gallery_html(items: Sequence[GalleryItem], result: EvaluationResult, images_dir: str) -> str:
    """The gallery page, after :func:`write_thumbnails` (frames without an ``href`` are placeholders).

    Every item carries ``data-rank``, ``data-seq-id`` and ``data-loss`` (full precision), for scripts and
    tests to read back without parsing the captions.

    Args:
        items: The gallery, thumbnails written.
        result: The scored submission, for the header (its metric and size).
        images_dir: Where the frames were read from, named in the header.
    """
    return render_page(
        GALLERY_TEMPLATE,
        items=items,
        result=result,
        images_dir=images_dir,
        top_predictions=TOP_PREDICTIONS,
        index_href=INDEX_HTML,
        csv_href=GALLERY_CSV,
    )


def _strip(item: GalleryItem) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """The sequence's frames side by side at :data:`SHEET_TILE_HEIGHT`, and (x centre, problem) of each
    grey placeholder tile, for the contact sheet to write the problem on."""
    h, gap = SHEET_TILE_HEIGHT, SHEET_TILE_GAP
    tiles, notes, x = [], [], 0.0
    for t in item.images:
        if t.image is not None:
            w = max(1, round(t.image.width * h / t.image.height))
            tiles.append(np.asarray(t.image.resize((w, h), Image.Resampling.BILINEAR)))
        else:
            w = round(h * SHEET_PLACEHOLDER_ASPECT)
            tiles.append(np.full((h, w, 3), PLACEHOLDER_GREY, dtype=np.uint8))
            notes.append((x + w / 2, t.problem or "unavailable"))
        x += w + gap
        tiles.append(np.full((h, gap, 3), WHITE, dtype=np.uint8))
    return np.concatenate(tiles[:-1], axis=1), notes


def plot_gallery(items: Sequence[GalleryItem], columns: int = SHEET_COLUMNS) -> Figure:
    """The contact sheet: one panel per sequence with its frames, loss, true labels and top predictions.

    Args:
        items: The gallery (thumbnails decoded; placeholders drawn as grey tiles that say why).
        columns: Panels per row.
    """
    strips = [_strip(it) for it in items]
    # Every strip padded to the widest, so frames show at one scale whatever a sequence's length.
    width = max((s.shape[1] for s, _ in strips), default=1)
    rows = max(1, -(-len(items) // columns))
    row_height = SHEET_PANEL_WIDTH_IN * SHEET_TILE_HEIGHT / width + SHEET_CAPTION_IN
    fig = Figure(figsize=(SHEET_PANEL_WIDTH_IN * columns, row_height * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, it, (strip, notes) in zip(axes, items, strips):
        pad = np.full((strip.shape[0], width - strip.shape[1], 3), WHITE, dtype=np.uint8)
        ax.imshow(np.concatenate([strip, pad], axis=1))
        for cx, reason in notes:
            ax.text(cx, SHEET_TILE_HEIGHT / 2, textwrap.fill(reason, SHEET_PROBLEM_WRAP), ha="center",
                    va="center", fontsize=8, color="#a00")
        more = f" (+{it.more_images} frames)" if it.more_images else ""
        title = (
            f"#{it.rank} {it.seq_id}  loss {it.loss:.4f}{more}\n"
            + textwrap.fill(f"true: {it.true_text}", SHEET_CAPTION_WRAP) + "\n"
            + textwrap.fill(f"top {TOP_PREDICTIONS}: {it.top_text}", SHEET_CAPTION_WRAP)
        )
        ax.set_title(title, fontsize=8, loc="left")
    return fig
