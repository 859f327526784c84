"""Batch scoring with Ray Data: flip TTA, sequence and ensemble geometric means, the submission CSV.

The pipeline, as the 2nd-place solution scored a season:

1. Ray Data tasks read each raw (or prepared) image and apply the preparation rule
   (:func:`camtrap.data.imageio.load_resized`, long side 512), so raw and prepared inputs give the same
   pixels, then resize it on to each model's own inference long side (models of one ensemble may
   differ: the seed ran resnext50 at 512x384 and resnext101 at 352x256; one column per distinct size,
   :func:`camtrap.data.frames.decode_batch`); a file that fails to decode becomes an error row, never a
   crash. Every PIL call is in these CPU tasks, none in the model actors that hold the GPUs.
2. One actor pool per model runs the image and its horizontal flip, under autocast on CUDA (``--amp``),
   batches sized for the device (:func:`camtrap.infer.actors.scoring_batch_size`), and applies a sigmoid
   in float32.
3. The driver appends every finished block's per-image probabilities to Parquet parts under the work
   dir (:class:`camtrap.data.resume.PartLog`), so a killed run resumes without redoing finished images.
4. Aggregation in pandas/numpy: geometric mean over a sequence's images x flips per model, then across
   models (or the arithmetic mean, or the 1st place's mean-for-species / gmean-for-empty rule). A
   sequence with no decodable image gets the class priors and is listed in ``failed_sequences.csv``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from camtrap import model_file
from camtrap.console import Progress
from camtrap.data import storage
from camtrap.data.classes import DATETIME, FILE_NAME, SEQ_ID
from camtrap.data.contract import Metadata, read_metadata
from camtrap.data.decoding import scoring_decode
from camtrap.data.frames import ERROR, decode_batch, image_column
from camtrap.data.imageio import decode_record
from camtrap.data.prepare import refuse_output_inside_images
from camtrap.data.resume import PartLog
from camtrap.data.sequences import CAMERA, SEQUENCES_FILE, metadata_or_sequences
from camtrap.errors import InputError
from camtrap.export import FIELD_FORMATS, ExportSettings, ScoredSeason, write_field_formats
from camtrap.infer.actors import ActorPlan, check_amp, plan_actors, scoring_batch_size
from camtrap.infer.predictor import FlipTTAPredictor, prob_column
from camtrap.infer.submission import (
    FAILED_SEQUENCES_FILE,
    aggregate_submission,
    submission_order,
    write_submission,
)
from camtrap.metrics import Aggregate
from camtrap.runtime import cluster_view, frame_dataset, gpu_nodes_have_cuda

PARTS_DIR = "predictions"
#: Memory a decode task reserves (a batch of full-size frames decoded at once). Declaring it also keeps
#: Ray Data from fusing the decode step into the model actors: it fuses maps whose remote args are
#: equal (1 CPU each on a 2-CPU node with one model), and a fused actor decodes and infers in turn on
#: one core instead of overlapping the two.
DECODE_TASK_MEMORY = 2**30
#: Object-store bytes a scoring job may hold per model actor, at least. Decoded frames queue there for the
#: models; where decoding outruns inference for hours, the cap keeps that queue (and the job's memory)
#: bounded instead of growing with the job (:func:`queue_bytes`).
QUEUE_BYTES_PER_ACTOR = 256 * 2**20
#: Batches of decoded images a model actor may have queued for it: the one it scores, the next ones.
QUEUED_BATCHES = 3


def queue_bytes(long_sides: Sequence[int], actors: int, batch_size: int) -> int:
    """The object-store cap of a scoring job: per model actor (``actors``, all pools), the larger of
    :data:`QUEUE_BYTES_PER_ACTOR` and :data:`QUEUED_BATCHES` batches of ``batch_size`` images at each of
    ``long_sides`` (square RGB, an upper bound), so a GPU's batch of hundreds can queue while it computes."""
    image_bytes = sum(3 * int(side) ** 2 for side in set(long_sides))
    return max(2, actors) * max(QUEUE_BYTES_PER_ACTOR, QUEUED_BATCHES * batch_size * image_bytes)


@dataclass
class ScoreSummary:
    sequences: int
    images: int
    image_errors: int
    failed_sequences: int
    processed: int
    seconds: float
    outputs: dict[str, str]

    def __str__(self) -> str:
        rate = self.processed / self.seconds if self.seconds > 0 else float("nan")
        where = "; ".join(f"{name}: {path}" for name, path in self.outputs.items())
        return (
            f"predict: {self.sequences} sequences, {self.images} images ({self.image_errors} failed to decode; "
            f"{self.failed_sequences} sequences with no usable image got the class priors, see "
            f"{FAILED_SEQUENCES_FILE}); {self.processed} images scored this run at {rate:.1f} img/s "
            f"in {self.seconds:.1f}s; {where}"
        )


SUBMISSION = "submission"
#: Every ``--format``: the competition's submission CSV and the field formats.
FORMATS = (SUBMISSION, *FIELD_FORMATS)
SUBMISSION_FILE = "submission.csv"


def resolve_formats(formats: Sequence[str] | None, submission_format: str | None, out: str) -> list[str]:
    """The formats to write: the given ones; else the competition submission when there is a format file or
    ``out`` names a ``.csv`` file; else every field format (``out`` is then a folder)."""
    if not formats:
        wants_csv = submission_format is not None or str(out).lower().endswith(".csv")
        return [SUBMISSION] if wants_csv else list(FIELD_FORMATS)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InputError(f"--format {unknown[0]!r}: expected one of {list(FORMATS)}")
    return list(dict.fromkeys(formats))


@dataclass(frozen=True)
class OutputPaths:
    """Where a scoring run writes: one submission CSV, or a folder of formats."""

    out: str
    folder: bool
    work_dir: str

    @classmethod
    def plan(cls, out: str, formats: Sequence[str], work_dir: str | None) -> OutputPaths:
        out = str(out)
        folder = list(formats) != [SUBMISSION]
        if folder and out.lower().endswith(".csv"):
            raise InputError(f"--out {out}: with --format {' '.join(formats)} --out is a folder (each format is a "
                             f"file or folder inside it); only `--format {SUBMISSION}` alone writes one CSV")
        default_work = (out.rstrip("/\\") if folder else os.path.splitext(out)[0]) + "_work"
        return cls(out=out, folder=folder, work_dir=str(work_dir or default_work))

    @property
    def submission(self) -> str:
        return storage.join(self.out, SUBMISSION_FILE) if self.folder else self.out

    @property
    def sequences(self) -> str:
        """Where a folder's inferred sequences go: inside the output folder, or beside the submission."""
        return storage.join(self.out, SEQUENCES_FILE) if self.folder else os.path.splitext(self.out)[0] + "_" + SEQUENCES_FILE


def model_metadata(paths: Sequence[str]) -> list[dict]:
    """Each model file's metadata (weights_only); all must predict the same class list."""
    metas = [model_file.model_metadata(p) for p in paths]
    classes = metas[0]["classes"]
    for m in metas[1:]:
        if list(m["classes"]) != list(classes):
            raise InputError(f"{m['path']}: class list differs from {metas[0]['path']}'s; an ensemble needs one list")
    return metas


def score_images(
    model_paths: Sequence[str],
    frame: pd.DataFrame,
    images_dir: str,
    log: PartLog,
    actors: ActorPlan,
    long_sides: Sequence[int],
    rows_per_block: int = 64,
    decode: str = "exact",
) -> int:
    """Score every row of ``frame`` (file name, seq_id) into ``log``, files decoded in mode ``decode`` and
    resized in the decode tasks to ``long_sides`` (each model's inference long side, in model order);
    ``actors.batch_size`` images per model-actor call. Returns how many were scored."""
    if frame.empty:
        return 0
    sides = list(dict.fromkeys(int(side) for side in long_sides))
    ds = frame_dataset(frame[[FILE_NAME, SEQ_ID]].reset_index(drop=True), rows_per_block)
    # A decode task takes a block (or a model batch, if smaller); the actors' batches of hundreds are
    # bundled from several tasks' outputs, so a GPU's batch does not make decode tasks fewer and longer.
    ds = ds.map_batches(decode_batch, fn_kwargs={"images_dir": images_dir, "decode": decode, "long_sides": sides},
                        batch_size=min(actors.batch_size, rows_per_block), batch_format="numpy", num_cpus=1,
                        memory=DECODE_TASK_MEMORY)
    for i, path in enumerate(model_paths):
        later = {int(side) for side in long_sides[i + 1:]}
        ds = ds.map_batches(
            FlipTTAPredictor,
            fn_constructor_kwargs={"model_path": path, "column": prob_column(i), "threads": actors.threads,
                                   "amp": actors.amp,
                                   "drop": tuple(image_column(s) for s in sides if s not in later)},
            batch_size=actors.batch_size,
            batch_format="numpy",
            compute=actors.compute(),
            **actors.remote_args(),
        )
    limits = ds.context.execution_options.resource_limits
    ds.context.execution_options.resource_limits = limits.copy(
        object_store_memory=queue_bytes(sides, len(model_paths) * actors.max_actors, actors.batch_size))
    progress = Progress("predict", len(frame))
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
            log.append(batch)
            progress.update(len(batch))
    finally:
        log.flush()
        progress.close()
    return progress.done


def predict(
    model_paths: Sequence[str],
    metadata: str | Sequence[str] | None,
    images_dir: str,
    out: str,
    submission_format: str | None = None,
    work_dir: str | None = None,
    how: Aggregate = "gmean",
    batch_size: int | None = None,
    use_gpu: bool | None = None,
    actors_per_model: tuple[int, int] | None = None,
    rows_per_task: int = 64,
    overwrite: bool = False,
    connect: Callable[[], object] | None = None,
    formats: Sequence[str] | None = None,
    sequence_gap: float | None = None,
    export: ExportSettings = ExportSettings(),
    decode: str | None = None,
    force_decode: bool = False,
    amp: str = "auto",
) -> tuple[ScoreSummary, pd.DataFrame]:
    """Score a season and write its outputs; rerunning with the same work dir resumes.

    ``formats`` (:func:`resolve_formats`): the competition submission at ``out``, or a folder ``out`` of
    field formats. ``metadata`` None: the images are grouped into sequences from their capture times
    (:func:`camtrap.data.sequences.metadata_or_sequences`). ``use_gpu`` None: GPUs if the cluster has or
    can add them; ``actors_per_model`` None: a pool sized from the cluster
    (:func:`camtrap.infer.actors.plan_actors`). Every input is checked first (model files, metadata,
    submission format, the work dir's state); ``connect`` (a job's start or join of Ray) is called only
    then, and only when there is something to score. Returns the summary and the sequence probabilities.
    ``decode`` None: the models' mode; another, or an ensemble of mixed modes, is refused unless
    ``force_decode`` (:func:`camtrap.data.decoding.scoring_decode`). ``batch_size`` None: sized for the
    actors' device (:func:`camtrap.infer.actors.scoring_batch_size`: 256 on CUDA, 16 on CPU). ``amp``:
    autocast of the model actors, ``auto`` (bf16 from compute capability 8.0, fp16 below, off on CPU),
    ``off``, ``bf16`` or ``fp16`` (CUDA only).
    """
    start = time.perf_counter()
    check_amp(amp, cuda=True)
    if batch_size is not None:
        scoring_batch_size("cpu", batch_size)  # refused now, before any input is read, by the rule plan_actors applies
    metas = model_metadata(model_paths)
    decoding = scoring_decode(metas, images_dir, decode, force_decode)
    formats = resolve_formats(formats, submission_format, out)
    if submission_format is not None and SUBMISSION not in formats:
        raise InputError("--submission-format orders the competition submission: add --format submission")
    paths = OutputPaths.plan(out, formats, work_dir)
    for flag, path in (("--out", paths.out), ("--work-dir", paths.work_dir)):
        refuse_output_inside_images(path, images_dir, flag)
    if isinstance(metadata, str):
        metadata = [metadata]
    metadata = metadata_or_sequences(metadata, images_dir, paths.sequences, sequence_gap, job="predict")
    md = read_metadata(metadata)
    rejected = pd.DataFrame({FILE_NAME: [i.file_name or "" for i in md.rejected],
                             SEQ_ID: [i.seq_id or "" for i in md.rejected],
                             ERROR: [str(i) for i in md.rejected]})
    # Row and column order, checked before any image is scored: a typo in the format file fails now.
    seq_order = list(dict.fromkeys([*md.frame[SEQ_ID], *rejected[SEQ_ID][rejected[SEQ_ID] != ""]]))
    columns = list(metas[0]["classes"])
    if submission_format is not None:
        seq_order, columns = submission_order(submission_format, seq_order, columns)
    log = PartLog(storage.join(paths.work_dir, PARTS_DIR), key=FILE_NAME,
                  columns=[FILE_NAME, SEQ_ID, ERROR] + [prob_column(i) for i in range(len(metas))])
    # Keyed to the models' content, not their paths: a retrained model.pt at the same path is a new model.
    log.pin_settings({"models": [str(p) for p in model_paths], "model_sha256": [m["sha256"] for m in metas],
                      "images_dir": str(images_dir)} | decode_record(decoding.mode), overwrite=overwrite,
                     what="this work dir")
    todo = md.frame[~md.frame[FILE_NAME].isin(set(log.read()[FILE_NAME]))]
    processed = 0
    if len(todo):
        if connect is not None:
            connect()
        view = cluster_view()
        actors = plan_actors(view, len(model_paths), use_gpu, actors_per_model, batch_size, amp)
        print(actors.describe(), flush=True)
        if not actors.hosts_up(view):
            print("predict: no node that can host a model actor is up yet: waiting for the autoscaler to add one "
                  "(`ray status` or the dashboard's Cluster tab show it coming)", flush=True)
        if actors.use_gpu and not gpu_nodes_have_cuda("predict", actors.resources):
            actors = actors.on_cpu_after_all(batch_size)
            print(f"predict: batch {actors.batch_size} images on those CPUs", flush=True)
        processed = score_images(model_paths, todo, images_dir, log, actors,
                                 [int(m["inference_long_side"]) for m in metas], rows_per_block=rows_per_task,
                                 decode=decoding.read)
    results = log.read()
    results = results[results[FILE_NAME].isin(set(md.frame[FILE_NAME]))]
    results = pd.concat([results, rejected[rejected[SEQ_ID] != ""]], ignore_index=True)
    # Floating-point sums depend on order: sort so a resumed run writes the very same bytes.
    results = results.sort_values(FILE_NAME, kind="stable").reset_index(drop=True)
    submission, failed = aggregate_submission(results, seq_order, metas, how)
    ordered = submission[[SEQ_ID, *columns]]
    storage.write_bytes_atomic(storage.join(paths.work_dir, FAILED_SEQUENCES_FILE), failed.to_csv(index=False).encode())
    written: dict[str, str] = {}
    if SUBMISSION in formats:
        write_submission(ordered, paths.submission)
        written[SUBMISSION] = paths.submission
    field_formats = [f for f in formats if f != SUBMISSION]
    if field_formats:
        season = ScoredSeason(classes=list(metas[0]["classes"]), sequences=submission.set_index(SEQ_ID),
                              images=_image_outcomes(md, results, rejected), failed=failed, models=metas,
                              images_dir=str(images_dir))
        files, warnings = write_field_formats(season, field_formats, paths.out, export)
        for warning in warnings:
            print(f"predict: warning: {warning}", flush=True)
        written.update(files)
    summary = ScoreSummary(
        sequences=len(submission), images=md.num_input_rows,
        image_errors=int((results[ERROR] != "").sum()), failed_sequences=len(failed),
        processed=processed, seconds=time.perf_counter() - start, outputs=written,
    )
    return summary, ordered


def _image_outcomes(md: Metadata, results: pd.DataFrame, rejected: pd.DataFrame) -> pd.DataFrame:
    """Every input image with its outcome: the metadata's rows (scored or not) and its rejected rows."""
    errors = results.drop_duplicates(FILE_NAME).set_index(FILE_NAME)[ERROR]
    images = md.frame[[SEQ_ID, FILE_NAME, DATETIME, CAMERA]].copy()
    images[ERROR] = images[FILE_NAME].map(errors).fillna("not scored")
    bad = rejected[rejected[SEQ_ID] != ""].assign(**{DATETIME: "", CAMERA: ""})
    return pd.concat([images, bad[[SEQ_ID, FILE_NAME, DATETIME, CAMERA, ERROR]]], ignore_index=True)
