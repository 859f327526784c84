"""The scale bench: one epoch's start on a Serengeti-sized season (7 M rows), against a 100k-row reference.

A synthetic season (rows in sequences of about 2.65 images, 54 classes, about 70 % empty, every file
name pointing at one of a handful of small generated JPEGs) goes through what each training run and
epoch does with :mod:`camtrap.train.epochs`, rank 0 of ``world_size`` standing for every rank:

1. ``table``: :meth:`EpochTable.from_frame` of the season's ``TrainingTable`` frame (what the driver holds);
2. ``put``: ``ray.put`` of that table (once per run);
3. ``indices``: :func:`epoch_indices` of one rank (every rank, every epoch);
4. ``dataset``: :func:`epoch_dataset` of that rank's slice;
5. ``first batch``: its first training batch, decode workers warm (their cold start, process and imports,
   is measured apart: it does not grow with the season).

Each step is timed and its peak RSS growth in this process sampled. The same steps on the reference table
give the ratio of each step's cost between the two sizes; beside them, what a plain loop would do on the
season frame (``np.random.permutation`` and a pandas slice of one rank's rows, 64 images decoded in this
process) and the frame's memory against the table's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
from PIL import Image

from camtrap.bench.common import ratio
from camtrap.data.classes import COMPETITION_CLASSES, FILE_NAME, SEQ_ID
from camtrap.train.augment import train_transform
from camtrap.train.dataset import TARGET, decode_files
from camtrap.train.epochs import EpochTable, epoch_dataset, epoch_indices

#: Serengeti's sequences: mostly 3 images, some 1 or 2 (mean 2.65), and about 70 % of them empty.
SEQUENCE_LENGTHS = {1: 0.10, 2: 0.15, 3: 0.75}
EMPTY_FRACTION = 0.7
#: A file name as long as Serengeti's ``S1/B04/B04_R1/S1_B04_R1_PICT0001.JPG``; only ``IMAGES`` files exist.
NAME_DIR = "S1/B04/B04_R1"
IMAGES = 8
STEPS = ("table", "put", "indices", "dataset", "first batch")


class PeakRSS:
    """Peak resident memory of this process between :meth:`start` and :meth:`stop` (sampled every ``interval`` s)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self.start_mb = self.peak_mb = self.end_mb = 0.0

    def _rss(self) -> float:
        return self._proc.memory_info().rss / 2**20

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, self._rss())

    def start(self) -> None:
        self.start_mb = self.peak_mb = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.end_mb = self._rss()
        self.peak_mb = max(self.peak_mb, self.end_mb)


def measure(step: str, fn: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """``fn()``, its wall time and the growth of this process's RSS at its peak over the start."""
    mem = PeakRSS()
    mem.start()
    try:
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
    finally:
        mem.stop()
    return out, {"step": step, "seconds": seconds, "peak_rss_growth_mb": mem.peak_mb - mem.start_mb,
                 "rss_after_mb": mem.end_mb}


def write_images(images_dir: str, size: tuple[int, int] = (512, 384)) -> list[str]:
    """``IMAGES`` small JPEGs (smooth colour and noise) under ``NAME_DIR``; their file names."""
    rng = np.random.default_rng(0)
    w, h = size
    os.makedirs(os.path.join(images_dir, NAME_DIR), exist_ok=True)
    names = []
    for k in range(IMAGES):
        base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * rng.uniform(0.2, 1.0, 3)
        img = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
        name = f"{NAME_DIR}/S1_B04_R1_PICT{k:04d}.JPG"
        Image.fromarray(img).save(os.path.join(images_dir, name), quality=90)
        names.append(name)
    return names


def season_frame(rows: int, names: list[str], seed: int = 0) -> pd.DataFrame:
    """A synthetic season as ``load_training_table`` frames it: ``seq_id, file_name, target`` (float32 per row).

    Sequences of 1-3 images (:data:`SEQUENCE_LENGTHS`), 70 % empty, the rest one species (two now and
    then) among the other 53 classes, rarer ones rarer; row ``i`` names image ``i % len(names)``.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.choice(list(SEQUENCE_LENGTHS), p=list(SEQUENCE_LENGTHS.values()), size=rows // 2 + 1)
    n_seq = int(np.searchsorted(np.cumsum(lengths), rows)) + 1
    codes = np.repeat(np.arange(n_seq), lengths[:n_seq])[:rows]
    n_cls = len(COMPETITION_CLASSES)
    targets = np.zeros((n_seq, n_cls), dtype=np.float32)
    empty = rng.random(n_seq) < EMPTY_FRACTION
    targets[empty, COMPETITION_CLASSES.index("empty")] = 1.0
    species = [i for i, c in enumerate(COMPETITION_CLASSES) if c != "empty"]
    weights = 1.0 / np.arange(1, len(species) + 1)
    animal = np.flatnonzero(~empty)
    second = animal[rng.random(len(animal)) < 0.05]  # a second species in 5 % of them
    for seqs in (animal, second):
        targets[seqs, rng.choice(species, p=weights / weights.sum(), size=len(seqs))] = 1.0
    seq_ids = np.array([f"SER_S1#B04#1#{k}" for k in range(n_seq)], dtype=object)
    # Distinct str objects per row, as read_csv makes them (a cached few would understate the frame).
    files = pa.array(np.asarray(names, dtype=object)[np.arange(rows) % len(names)]).to_numpy(zero_copy_only=False)
    return pd.DataFrame({SEQ_ID: seq_ids[codes], FILE_NAME: files, TARGET: list(targets[codes])})


def _first_batch(ds, batch_size: int) -> dict[str, np.ndarray]:
    return next(iter(ds.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=True)))


def _warm_workers(table_ref, rows: int, images_dir: str, transform, batch_size: int) -> float:
    """Seconds to run a whole tiny epoch: starts the decode workers and their imports, and leaves them warm.

    (A dataset abandoned after its first batch has its tasks killed, workers included.)
    """
    start = time.perf_counter()
    ds = epoch_dataset(table_ref, images_dir, transform, np.arange(min(rows, 4 * batch_size)), 0, 0)
    for _ in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        pass
    return time.perf_counter() - start


def platform_steps(frame: pd.DataFrame, images_dir: str, transform, world_size: int, batch_size: int,
                   seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The five steps on one season frame; their records, and what they made (sizes, the batch's shape)."""
    import ray

    records = []
    table, rec = measure("table", lambda: EpochTable.from_frame(frame, COMPETITION_CLASSES))
    records.append(rec)
    ref, rec = measure("put", lambda: ray.put(table))
    records.append(rec)
    cold = _warm_workers(ref, len(table), images_dir, transform, batch_size)
    indices, rec = measure("indices", lambda: epoch_indices(len(table), seed, 0, 0, world_size))
    records.append(rec)
    ds, rec = measure("dataset", lambda: epoch_dataset(ref, images_dir, transform, indices, seed, 0))
    records.append(rec)
    batch, rec = measure("first batch", lambda: _first_batch(ds, batch_size))
    records.append(rec)
    made = {"rows": len(table), "sequences": table.n_sequences, "table_mb": table.nbytes / 2**20,
            "rank_rows": len(indices), "warm_up_s": cold,
            "batch_rows": len(batch[TARGET]), "batch_image_shape": list(np.asarray(batch["image"][0]).shape),
            "batch_rows_match_indices": bool(np.array_equal(batch["row"], indices[:len(batch["row"])]))}
    return records, made


def plain_steps(frame: pd.DataFrame, images_dir: str, transform, world_size: int, batch_size: int,
                seed: int) -> list[dict[str, Any]]:
    """What a plain loop does instead: permute every row, slice one rank's rows of the frame, decode a batch."""
    per_rank = len(frame) // world_size

    def permute_and_slice() -> pd.DataFrame:
        perm = np.random.default_rng([seed, 0]).permutation(len(frame))
        return frame.iloc[perm[:per_rank]]

    part, rec_slice = measure("plain permutation + slice", permute_and_slice)
    _, rec_decode = measure("plain decode of one batch",
                            lambda: decode_files(part[FILE_NAME].to_numpy()[:batch_size], images_dir, transform))
    return [rec_slice, rec_decode]


def bench_scale(rows: int = 7_000_000, reference_rows: int = 100_000, world_size: int = 8, batch_size: int = 64,
                long_side: int = 296, seed: int = 0) -> dict[str, Any]:
    """The five steps on ``rows`` and on ``reference_rows`` rows, and the plain loop on ``rows``.

    Needs Ray started. Returns a JSON-ready dict; :func:`format_scale` prints it.
    """
    scratch = tempfile.mkdtemp(prefix="camtrap-bench-scale-")
    result: dict[str, Any] = {"rows": rows, "reference_rows": reference_rows, "world_size": world_size,
                              "batch_size": batch_size, "long_side": long_side}
    whole = PeakRSS(interval=0.02)
    whole.start()
    try:
        names = write_images(scratch)
        transform = train_transform(long_side, 1.14, mean=None, std=None)
        for key, n in (("reference", reference_rows), ("season", rows)):
            start = time.perf_counter()
            frame = season_frame(n, names, seed)
            build_s = time.perf_counter() - start
            records, made = platform_steps(frame, scratch, transform, world_size, batch_size, seed)
            result[key] = {"steps": records, "frame_build_s": build_s, "frame_mb": frame_bytes(frame) / 2**20,
                           **made}
            if key == "season":
                result["plain"] = plain_steps(frame, scratch, transform, world_size, batch_size, seed)
            del frame
    finally:
        whole.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    season, reference = result["season"], result["reference"]
    result["ratios"] = {s["step"]: ratio(s["seconds"], r["seconds"])
                        for s, r in zip(season["steps"], reference["steps"])}
    steps = {r["step"]: r["seconds"] for r in season["steps"]}
    plain = {r["step"]: r["seconds"] for r in result["plain"]}
    result["vs_plain"] = {
        "indices_vs_permutation_slice": ratio(steps["indices"], plain["plain permutation + slice"]),
        "first_batch_vs_plain_decode": ratio(steps["first batch"], plain["plain decode of one batch"]),
        "table_vs_frame_memory": ratio(season["table_mb"], season["frame_mb"]),
    }
    result["rss_start_mb"], result["peak_rss_mb"] = whole.start_mb, whole.peak_mb
    return result


def frame_bytes(frame: pd.DataFrame) -> int:
    """The frame's memory: pandas' deep count, plus the target vectors (pandas counts an array object's header)."""
    targets = frame[TARGET].to_numpy()
    return int(frame.memory_usage(deep=True).sum()) + sum(t.nbytes for t in targets[:1]) * len(targets)


def format_scale(result: dict[str, Any]) -> str:
    """The console summary of :func:`bench_scale`."""
    season, ref, v = result["season"], result["reference"], result["vs_plain"]
    lines = [
        (f"scale: one epoch's start for rank 0 of {result['world_size']}, batch {result['batch_size']}, "
         f"long side {result['long_side']}"),
        (f"  season {season['rows']:,} rows ({season['sequences']:,} sequences): EpochTable "
         f"{season['table_mb']:.0f} MB, its TrainingTable frame {season['frame_mb']:.0f} MB (made in "
         f"{season['frame_build_s']:.1f} s); reference {ref['rows']:,} rows"),
        f"  {'step':<14}{'season s':>10}{'peak +MB':>10}{'ref s':>9}{'peak +MB':>10}{'time ratio':>12}",
    ]
    for s, r in zip(season["steps"], ref["steps"]):
        lines.append(f"  {s['step']:<14}{s['seconds']:>10.3f}{s['peak_rss_growth_mb']:>10.0f}{r['seconds']:>9.3f}"
                     f"{r['peak_rss_growth_mb']:>10.0f}{result['ratios'][s['step']]:>11.1f}x")
    for p in result["plain"]:
        lines.append(f"  {p['step']:<30}{p['seconds']:>8.3f} s  peak +{p['peak_rss_growth_mb']:.0f} MB")
    lines += [
        (f"  rank indices / plain permutation + slice = {v['indices_vs_permutation_slice']:.2f}x;  first batch / "
         f"plain decode of a batch = {v['first_batch_vs_plain_decode']:.2f}x;  table / frame memory = "
         f"{v['table_vs_frame_memory']:.3f}x"),
        (f"  rank 0: {season['rank_rows']:,} rows; first batch {season['batch_rows']} x "
         f"{season['batch_image_shape']}, in the rank's order: {season['batch_rows_match_indices']}; decode "
         f"workers' cold start {season['warm_up_s']:.1f} s (not counted)"),
        (f"  this process's RSS: {result['rss_start_mb']:.0f} MB at the start, {result['peak_rss_mb']:.0f} MB "
         "at the peak"),
    ]
    return "\n".join(lines)
