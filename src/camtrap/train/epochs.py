"""Seeded epochs over a compact season table: each rank's rows and augmentations, from the recipe seed.

What it replaces: ``image_dataset(..., shuffle=True)`` cut the row table into 64-row blocks and called
``random_shuffle()`` every epoch, an all-to-all whose object count grows with the square of the number
of blocks (a 7 M-image season is about 100k blocks), and ``streaming_split`` then handed blocks to the
ranks by timing, with unseeded augmentation: a recipe's ``seed`` did not make a run repeatable.

Here instead:

* :class:`EpochTable` holds a season compactly: file names as one Arrow string array, an int32
  sequence index per row, and the targets once per *sequence* as a uint8 matrix (a float32 vector per
  row would be 1.5 GB at 7 M rows x 54 classes). It is ``ray.put`` once and every worker and decode task
  reads it zero-copy from the object store.
* :func:`epoch_indices`: a permutation of all rows seeded by ``(seed, epoch)``, cut into equal per-rank
  slices (the remainder, fewer than ``world_size`` rows, sits the epoch out, so every rank takes the
  same number of steps as DDP needs). Every rank computes it alone; nothing is exchanged.
* :func:`image_seed`: each image's augmentation seed from ``(seed, epoch, row)``, so an image's crop and
  flips do not depend on which Ray task or process decodes it, nor on the number of ranks.
* :func:`epoch_dataset`: one rank's epoch as a Ray Dataset whose read tasks each decode and augment a
  range of its index slice (about four tasks per decode CPU), in order (``preserve_order``).

Same seed, epoch and world size: the same rows on the same rank in the same order, with the same
augmentations. An image that fails to decode is named in a warning; in training its place is taken by
another image of its block (:func:`decode_positions`), in validation it is left out.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

from camtrap.data.classes import FILE_NAME, SEQ_ID
from camtrap.data.imageio import DEFAULT_DECODE, DecodeMode
from camtrap.train.dataset import IMAGE, TARGET, decode_files

#: The column of an epoch dataset that holds each image's row in its :class:`EpochTable`.
ROW = "row"


def _large_strings(values) -> pa.Array:
    """One contiguous Arrow ``large_string`` array (64-bit offsets: no 2 GB limit on a season's names).

    A pandas column of pandas 3's Arrow-backed strings is taken as it is (no Python objects made).
    """
    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = pa.array(values if isinstance(values, pd.Series) else np.asarray(values, dtype=object))
    values = values.cast(pa.large_string())
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


@dataclass(frozen=True, eq=False)
class EpochTable:
    """A season's training rows, compact: ``file_names`` and ``seq_index`` per row; ``seq_ids`` and
    ``targets`` (uint8 0/1, ``n_sequences x n_classes``) per sequence.

    About 80 bytes a row at Serengeti's 2.65 images per sequence, 54 classes and 36-character file
    names: 0.53 GB for 7 M rows, against 2.7 GB as the ``TrainingTable`` frame with its float32 target
    vector per row (``python ray_jobs/bench.py scale`` measures both).
    Numpy and Arrow buffers only, so ``ray.get`` of it in a worker maps the object store, copying nothing.
    """

    file_names: pa.Array
    seq_index: np.ndarray
    seq_ids: pa.Array
    targets: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        n_seq = len(self.seq_ids)
        if self.seq_index.dtype != np.int32 or self.seq_index.ndim != 1:
            raise ValueError(f"seq_index must be a 1-D int32 array, got {self.seq_index.dtype} {self.seq_index.shape}")
        if len(self.file_names) != len(self.seq_index):
            raise ValueError(f"{len(self.file_names)} file names for {len(self.seq_index)} rows")
        if self.targets.dtype != np.uint8 or self.targets.shape != (n_seq, len(self.classes)):
            raise ValueError(f"targets must be uint8 of shape {(n_seq, len(self.classes))}, got "
                             f"{self.targets.dtype} {self.targets.shape}")
        if len(self.seq_index) and (self.seq_index.min() < 0 or self.seq_index.max() >= n_seq):
            raise ValueError(f"seq_index must lie in [0, {n_seq})")

    @classmethod
    def from_sequences(
        cls,
        row_seq_ids: Sequence[str] | np.ndarray | pd.Series,
        file_names: Sequence[str] | np.ndarray | pd.Series | pa.Array,
        seq_ids: Sequence[str] | np.ndarray | pd.Series,
        seq_targets: np.ndarray,
        classes: Sequence[str],
    ) -> EpochTable:
        """From each row's ``seq_id`` and file name, and one 0/1 target row per sequence (``seq_ids``).

        What the labels file gives: a row per sequence. No per-row target is ever built.
        """
        seq_ids = _large_strings(seq_ids)
        if pc.count_distinct(seq_ids).as_py() != len(seq_ids):
            raise ValueError("seq_ids repeat a sequence")
        rows = _large_strings(row_seq_ids)
        codes = pc.index_in(rows, value_set=seq_ids)
        if codes.null_count:
            missing = rows.filter(codes.is_null()).slice(0, 3).to_pylist()
            raise ValueError(f"{codes.null_count} rows name a sequence with no target, e.g. {missing}")
        return cls(_large_strings(file_names), codes.to_numpy().astype(np.int32), seq_ids,
                   _binary_targets(np.asarray(seq_targets), len(classes)), tuple(classes))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, classes: Sequence[str]) -> EpochTable:
        """From a :class:`camtrap.train.dataset.TrainingTable` frame (``seq_id, file_name, target``).

        Every row of a sequence carries its sequence's labels (``load_training_table`` joins them so);
        the row where a sequence first appears stands for it.
        """
        encoded = _large_strings(frame[SEQ_ID]).dictionary_encode()
        codes = encoded.indices.to_numpy().astype(np.int32)
        # Codes number the sequences in order of first appearance: a row is a first where its code
        # exceeds every code before it.
        is_first = np.ones(len(codes), dtype=bool)
        is_first[1:] = codes[1:] > np.maximum.accumulate(codes)[:-1]
        targets = _binary_targets(frame[TARGET].to_numpy()[is_first], len(classes))
        return cls(_large_strings(frame[FILE_NAME]), codes, encoded.dictionary, targets, tuple(classes))

    def __len__(self) -> int:
        return len(self.seq_index)

    @property
    def n_sequences(self) -> int:
        return len(self.seq_ids)

    @property
    def nbytes(self) -> int:
        return int(self.file_names.nbytes + self.seq_index.nbytes + self.seq_ids.nbytes + self.targets.nbytes)

    def rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Columns of these rows: ``row``, ``seq_id``, ``file_name`` (object arrays of str), ``target``
        (float32, one vector per row, as the loss takes it)."""
        rows = np.asarray(rows, dtype=np.int64)
        seqs = self.seq_index[rows]
        return {
            ROW: rows,
            SEQ_ID: self.seq_ids.take(pa.array(seqs)).to_numpy(zero_copy_only=False),
            FILE_NAME: self.file_names.take(pa.array(rows)).to_numpy(zero_copy_only=False),
            TARGET: self.targets[seqs].astype(np.float32),
        }


def _binary_targets(targets, n_classes: int, chunk: int = 65536) -> np.ndarray:
    """0/1 targets (a matrix, or an object array of per-row vectors) as a uint8 matrix, checked and
    converted ``chunk`` rows at a time: a season's float copy would be 0.5 GB of temporaries."""
    out = np.empty((len(targets), n_classes), dtype=np.uint8)
    for a in range(0, len(targets), chunk):
        part = targets[a:a + chunk]
        part = np.concatenate(part).reshape(len(part), -1) if part.dtype == object else np.asarray(part)
        if part.shape[1:] != (n_classes,):
            raise ValueError(f"targets must have {n_classes} classes, got rows of shape {part.shape[1:]}")
        if not ((part == 0) | (part == 1)).all():
            raise ValueError("targets must be 0 or 1 (the labels file's values)")
        out[a:a + len(part)] = part
    return out


def epoch_permutation(n_rows: int, seed: int, epoch: int) -> np.ndarray:
    """Every row once, in the order of epoch ``epoch`` of a run seeded ``seed`` (numpy PCG64)."""
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be non-negative, got {seed} and {epoch}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch]))).permutation(n_rows)


def epoch_indices(n_rows: int, seed: int, epoch: int, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s rows of epoch ``epoch`` (int64 row numbers, in training order).

    The seeded permutation of all ``n_rows`` cut into ``world_size`` equal consecutive slices of
    ``n_rows // world_size`` rows; the last ``n_rows % world_size`` rows of the permutation (a
    different few each epoch) are left out, so every rank takes the same number of steps.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    per_rank = n_rows // world_size
    return epoch_permutation(n_rows, seed, epoch)[rank * per_rank:(rank + 1) * per_rank].copy()


def validation_indices(n_rows: int, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s validation rows: every ``world_size``-th row, so that all rows are scored once."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    return np.arange(rank, n_rows, world_size, dtype=np.int64)


def stage_indices(n_rows: int, seed: int, epochs: Sequence[int], rank: int, world_size: int,
                  rows_per_epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rows, epoch of each row): rank ``rank``'s rows of every epoch in ``epochs``, one after another.

    Each epoch's rows are :func:`epoch_indices`, cut to ``rows_per_epoch`` (the steps x batch the loop
    takes; the rest would be a partial batch that is dropped). One dataset over a stage's epochs keeps
    its decode tasks running from one epoch into the next, through validation and the checkpoint,
    instead of starting a pipeline per epoch.
    """
    parts = [epoch_indices(n_rows, seed, e, rank, world_size)[:rows_per_epoch] for e in epochs]
    rows = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    of = np.concatenate([np.full(len(p), e, np.int64) for e, p in zip(epochs, parts)]) if parts else rows.copy()
    return rows, of


def image_seed(seed: int, epoch: int, row: int) -> int:
    """The augmentation seed (63 bits) of table row ``row`` in epoch ``epoch`` of a run seeded ``seed``.

    Keyed by the row, which appears at most once per epoch, so it is also its position's seed: the
    same in whichever task decodes it, and the same whatever the number of ranks.
    """
    state = np.random.SeedSequence([seed, epoch, row, 1]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


#: Read tasks per decode CPU in one rank's epoch: enough that every CPU has work while the ones ahead in
#: the order finish, so ``preserve_order`` never leaves CPUs idle behind a slow task.
TASKS_PER_CPU = 4
#: Rows a rank's decode tasks hold at once, at most (each CPU runs one task): a task yields its blocks one
#: after another and ``preserve_order`` buffers what later tasks finish early, so rows in flight are
#: memory. With few CPUs, fewer and longer tasks: Ray's cost per task was measured at seconds of the
#: demo's training on 2 cores (tasks of 64 rows: 198 s, of 256: 155 s, one per epoch: 118 s).
MAX_ROWS_IN_FLIGHT = 2048
#: But never tasks smaller than this: a batch of a GPU's size still spans only a few tasks.
MIN_ROWS_PER_TASK_CAP = 256


def rows_per_task_for(n_rows: int, cpus: float | None, rows_per_block: int, most: int | None = None) -> int:
    """Rows one decode task takes so that ``cpus`` CPUs each get about :data:`TASKS_PER_CPU` tasks.

    Whole blocks, between one block and ``most`` rows (default: :data:`MAX_ROWS_IN_FLIGHT` over the CPUs,
    not under :data:`MIN_ROWS_PER_TASK_CAP`). The fixed 2,048 rows it replaces gave a 6,000-image epoch
    three tasks: three of a 16-CPU GPU node's CPUs decoded while the GPU waited.
    """
    cpus = max(1, math.ceil(cpus or 1))
    most = most or max(MIN_ROWS_PER_TASK_CAP, MAX_ROWS_IN_FLIGHT // cpus)
    per_task = -(-n_rows // (cpus * TASKS_PER_CPU))
    per_task = -(-per_task // rows_per_block) * rows_per_block
    return max(rows_per_block, min(max(most, rows_per_block), per_task))


@dataclass(frozen=True)
class EpochSpec:
    """What every decode task of one rank's epoch shares, put in the object store once per epoch."""

    table: Any
    indices: np.ndarray
    images_dir: str
    transform: Callable[..., np.ndarray]
    seed: int | None
    #: The run epoch of every position (or one for all): an image's augmentation seed depends on it.
    epoch: int | np.ndarray
    decode: DecodeMode


def decode_positions(spec: EpochSpec, table: EpochTable, positions: np.ndarray) -> dict[str, np.ndarray]:
    """Positions in a rank's slice -> its rows (:meth:`EpochTable.rows`), decoded and augmented.

    ``seed`` ``None`` (validation): no per-image seed, the transform is called as ``transform(image)``,
    and a file that fails to decode is left out (with a warning naming it). In training, a failed file's
    place is taken by another image of the same block (its row, target and pixels): every rank must
    take the same number of steps, and one image missing from a rank's epoch would leave it a batch
    short while the others wait for it forever.
    """
    rows = spec.indices[positions]
    cols = table.rows(rows)
    epochs = np.broadcast_to(np.asarray(spec.epoch), spec.indices.shape)[positions]
    seeds = None if spec.seed is None else [image_seed(spec.seed, int(e), int(r)) for e, r in zip(epochs, rows)]
    keep, images = decode_files(cols[FILE_NAME], spec.images_dir, spec.transform, seeds, spec.decode)
    if spec.seed is not None and keep and len(keep) < len(rows):
        slot = np.arange(len(rows)) % len(keep)  # the decoded image each position shows
        slot[keep] = np.arange(len(keep))  # decoded rows stay in place; each failed one borrows one
        filled = np.empty(len(rows), dtype=object)
        filled[:] = [images[k] for k in slot]
        images, keep = filled, [keep[k] for k in slot]
    out = {k: v[keep] for k, v in cols.items()}
    out[IMAGE] = images
    return out


def _read_positions(spec_ref, start: int, stop: int, rows_per_block: int):
    """One read task: positions ``start..stop`` decoded ``rows_per_block`` at a time, a block each."""
    import ray
    from ray.data.block import BlockAccessor

    spec: EpochSpec = ray.get(spec_ref)
    table: EpochTable = ray.get(spec.table)
    for a in range(start, stop, rows_per_block):
        batch = decode_positions(spec, table, np.arange(a, min(stop, a + rows_per_block), dtype=np.int64))
        if len(batch[ROW]):
            yield BlockAccessor.batch_to_block(batch)


class EpochDatasource(Datasource):
    """One rank's epoch, read by tasks that decode: positions ``0..n-1`` of its index slice,
    ``rows_per_task`` per task, each task yielding decoded blocks of ``rows_per_block`` rows.

    Decoding in the read task itself, not in a ``map_batches`` after it: one task per chunk instead
    of two, and no block of positions through the object store. A task is a module function and three
    ints around one shared :class:`EpochSpec` ref (``range``'s closures took about 3.5 ms each to pickle
    and put in the iterating process).
    """

    def __init__(self, spec_ref, n: int, rows_per_task: int, rows_per_block: int) -> None:
        self.spec_ref, self.n = spec_ref, n
        self.rows_per_task, self.rows_per_block = rows_per_task, rows_per_block

    def estimate_inmemory_data_size(self) -> None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        """Tasks of ``rows_per_task`` positions each (``parallelism`` is ignored: the tasks are fixed)."""
        tasks = []
        for start in range(0, self.n, self.rows_per_task):
            stop = min(self.n, start + self.rows_per_task)
            meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
            tasks.append(ReadTask(functools.partial(_read_positions, self.spec_ref, start, stop, self.rows_per_block),
                                  meta, per_task_row_limit=per_task_row_limit))
        return tasks


def epoch_dataset(
    table,
    images_dir: str,
    transform: Callable[..., np.ndarray],
    indices: np.ndarray,
    seed: int | None,
    epoch: int | np.ndarray,
    rows_per_block: int = 32,
    rows_per_task: int | None = None,
    block_bytes: int = 8 * 2**20,
    max_cpus: float | None = None,
    max_object_store_bytes: float | None = None,
    progress_bars: bool = False,
    decode: DecodeMode = DEFAULT_DECODE,
):
    """One rank's epoch: a Ray Dataset of ``image`` (uint8 HWC), ``target`` (float32), ``seq_id``,
    ``file_name`` and ``row``, in the order of ``indices``.

    ``table``: an :class:`EpochTable` or, better, the ``ray.put`` ref of one (put once per run, shared
    by every worker and epoch). ``indices``: this rank's rows (:func:`epoch_indices`, or
    :func:`validation_indices` with ``seed=None`` for a deterministic eval transform, or a stage's
    :func:`stage_indices` with the epoch of each position as ``epoch``). Each Ray read task
    takes ``rows_per_task`` consecutive positions of ``indices`` (:class:`EpochDatasource`; None: about
    :data:`TASKS_PER_CPU` tasks per decode CPU, :func:`rows_per_task_for`), decodes them
    ``rows_per_block`` at a time and hands out the images in blocks of about ``block_bytes``: the
    process that iterates puts one small object per task (a few thousand an epoch for a rank of a 7 M-row
    season on 8 ranks, each a few milliseconds, and a stage's dataset holds all its epochs' tasks), and
    there is no all-to-all. ``preserve_order`` keeps the blocks in
    order, so the batches are the same on every build.

    No local shuffle buffer: the permutation already shuffles over the whole season, so a buffer would
    only move rows a few batches, cost a window of decoded images in the worker, and need a seed of
    its own to stay repeatable.

    ``decode``: the mode files are decoded with (the run's :class:`camtrap.data.decoding.ImagesDecode`
    ``read``). ``max_cpus`` and ``max_object_store_bytes`` cap this dataset's executor: each rank runs its own,
    so give each about its share (the cluster's decode CPUs and object store over the world size).
    """
    import ray

    table_ref = table if isinstance(table, ray.ObjectRef) else ray.put(table)
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    n = len(indices)
    if n == 0:
        raise ValueError("no rows for this rank: the epoch dataset would be empty")
    cpus = max_cpus if max_cpus is not None else ray.cluster_resources().get("CPU", 1.0)
    rows_per_task = max(rows_per_task or rows_per_task_for(n, cpus, rows_per_block), rows_per_block)
    spec = ray.put(EpochSpec(table_ref, indices, images_dir, transform, seed, epoch, decode))
    ds = ray.data.read_datasource(EpochDatasource(spec, n, rows_per_task, rows_per_block),
                                  override_num_blocks=-(-n // rows_per_task), num_cpus=1)
    # Decoded images leave a task in blocks of about this size (Ray's default, 128 MiB, would hold the
    # first batch back until hundreds of images are decoded).
    ds.context.target_max_block_size = block_bytes
    options = ds.context.execution_options
    options.preserve_order = True
    if max_cpus is not None or max_object_store_bytes is not None:
        options.resource_limits = ray.data.ExecutionResources.for_limits(
            cpu=max_cpus, object_store_memory=max_object_store_bytes)
    ds.context.enable_progress_bars = progress_bars
    return ds
