"""The preparation job: decode and resize every image of one or more metadata files with Ray Data.

Design, from what costs time on Ray here (see ``shared/reference/ray-2.60-notes.md``):

* Each Ray task gets a block of file names, reads, resizes and *writes* its images itself and returns
  only a small table of metadata. Pixels never travel through the object store, and the work per task
  (tens of images) dwarfs Ray's per-task overhead.
* Every result row is appended to ``OUT/_prepare_state/part-*.parquet`` by the driver as blocks finish,
  and every output JPEG is written atomically. Each ``ok`` record holds its output's size and SHA-256.
  A killed job therefore resumes by skipping files that have an ``ok`` record *and* an output file of
  the recorded size (one listing of ``OUT``); everything else, a truncated or deleted output included,
  is redone. The output bytes depend only on
  the input file and the settings, never on the number of workers or the order of blocks.
* ``OUT/manifest.parquet`` (and ``manifest.csv``) holds exactly one row per input metadata row,
  including rows rejected by the contract (bad ``file_name``, duplicates) and files that failed to
  decode, each with the reason.
* A folder is made in one decode mode (:data:`camtrap.data.imageio.DECODE_MODES`): the manifest's
  ``decode`` column and the pinned settings record it, training reads it from there
  (:func:`prepared_decode`), and a rerun in the other mode is refused naming both.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import pandas as pd

from camtrap.console import Progress
from camtrap.data import storage
from camtrap.data.classes import FILE_NAME, SEQ_ID
from camtrap.data.contract import LINE, SOURCE, Metadata, read_metadata
from camtrap.data.imageio import (
    DECODE_KEY,
    DEFAULT_DECODE,
    DEFAULT_MAX_PIXELS,
    PREPARE_LONG_SIDE,
    DecodeMode,
    ImageDecodeError,
    check_decode,
    decode_record,
    encode_jpeg,
    load_resized,
)
from camtrap.data.resume import PartLog
from camtrap.errors import InputError
from camtrap.runtime import frame_dataset

#: Results of finished blocks, kept for resume (under ``--out``).
STATE_DIR = "_prepare_state"
#: One row per input metadata row (under ``--out``), and the same as CSV for people.
MANIFEST = "manifest.parquet"
MANIFEST_CSV = "manifest.csv"
#: Manifest columns: a row's outcome and, when it failed, the reason.
STATUS = "status"
ERROR = "error"
STATUS_OK = "ok"
STATUS_ERROR = "error"
#: The output JPEG's size in bytes (-1 without one) and its SHA-256 hex digest ("" without one).
BYTES = "bytes"
SHA256 = "sha256"
#: The folder's decode mode, on every manifest row (a manifest without the column predates the modes: exact),
#: and its key in the pinned settings.
DECODE = DECODE_KEY

RESULT_COLUMNS = [FILE_NAME, SEQ_ID, "orig_width", "orig_height", "width", "height", BYTES, SHA256, STATUS, ERROR]
MANIFEST_COLUMNS = [FILE_NAME, SEQ_ID, SOURCE, LINE, "orig_width", "orig_height", "width", "height", BYTES, SHA256,
                    STATUS, ERROR, DECODE]


@dataclass(frozen=True)
class PrepareSettings:
    """Everything that determines the output bytes; a resumed run must use the same values."""

    long_side: int = PREPARE_LONG_SIDE
    quality: int = 95
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    decode: DecodeMode = DEFAULT_DECODE

    def __post_init__(self) -> None:
        check_decode(self.decode)

    def record(self) -> dict:
        """The settings as pinned beside the results. ``exact`` is left out, so a folder prepared before
        the modes existed (its record has no ``decode``) resumes as the exact folder it is."""
        return {k: v for k, v in asdict(self).items() if k != DECODE} | decode_record(self.decode)


@dataclass
class PrepareSummary:
    """What a preparation run did; ``ok + errors == input_rows`` always."""

    input_rows: int
    ok: int
    errors: int
    processed: int
    skipped: int
    retried: int  # of ``processed``: files that had failed on an earlier run
    redone: int  # of ``processed``: files done before whose output was missing or not the recorded size
    seconds: float
    out_dir: str
    manifest: str

    def __str__(self) -> str:
        rate = self.processed / self.seconds if self.seconds > 0 else float("nan")
        return (
            f"prepare: {self.input_rows} input rows -> {self.ok} ok, {self.errors} errors "
            f"({self.processed} processed this run at {rate:.1f} img/s, {self.skipped} already done) "
            f"in {self.seconds:.1f}s; manifest: {self.manifest}"
            + (f"; {self.redone} outputs were missing or truncated and were prepared again" if self.redone else "")
        )


def prepare_one(file_name: str, images_dir: str, out_dir: str, settings: PrepareSettings) -> dict:
    """Prepare one image; never raises for a bad file: the returned record carries the error.

    This is the unit of work of the Ray job and of the benchmark's plain baselines alike.
    """
    record = {FILE_NAME: file_name, "orig_width": -1, "orig_height": -1, "width": -1, "height": -1, BYTES: -1,
              SHA256: ""}
    src = storage.join(images_dir, file_name)
    try:
        try:
            data = storage.read_inside(images_dir, file_name)
        except FileNotFoundError:
            raise ImageDecodeError(f"file not found: {src}") from None
        except IsADirectoryError:
            raise ImageDecodeError(f"is a directory, not an image: {src}") from None
        img, (ow, oh) = load_resized(data, settings.long_side, max_pixels=settings.max_pixels, decode=settings.decode)
        encoded = encode_jpeg(img, settings.quality)
        storage.write_bytes_atomic(storage.join(out_dir, file_name), encoded)
    except (ImageDecodeError, OSError) as e:
        record.update(status=STATUS_ERROR, error=f"{file_name}: {e}")
        return record
    record.update(orig_width=ow, orig_height=oh, width=img.width, height=img.height, status=STATUS_OK, error="")
    record.update({BYTES: len(encoded), SHA256: hashlib.sha256(encoded).hexdigest()})
    return record


def prepare_block(batch: pd.DataFrame, images_dir: str, out_dir: str, settings: PrepareSettings) -> pd.DataFrame:
    """Ray Data ``map_batches`` function: prepare every file of a block, return its records."""
    records = [prepare_one(f, images_dir, out_dir, settings) for f in batch[FILE_NAME]]
    out = pd.DataFrame.from_records(records)
    out[SEQ_ID] = batch[SEQ_ID].to_numpy()
    return out[RESULT_COLUMNS]


def _existing_outputs(out_dir: str) -> dict[str, int]:
    """Size of every file already under ``out_dir`` by relative path (one listing, not one call per file)."""
    fs, inner = storage.get_fs(out_dir)
    if not fs.exists(inner):
        return {}
    root = inner.rstrip("/") + "/"
    return {p.removeprefix(root): int(info.get("size") or 0) for p, info in fs.find(inner, detail=True).items()}


def build_manifest(metadata: Metadata, results: pd.DataFrame, decode: DecodeMode = DEFAULT_DECODE) -> pd.DataFrame:
    """One row per input metadata row, in input order: results for valid rows, reasons for rejected;
    ``decode``: the folder's mode, recorded on every row."""
    valid = metadata.frame[[FILE_NAME, SEQ_ID, SOURCE, LINE]].merge(
        results.drop(columns=[SEQ_ID]), on=FILE_NAME, how="left"
    )
    missing = valid[STATUS].isna()
    valid.loc[missing, STATUS] = STATUS_ERROR
    valid.loc[missing, ERROR] = "not processed (job interrupted?)"
    rejected = pd.DataFrame(
        [
            {
                FILE_NAME: i.file_name or "", SEQ_ID: i.seq_id or "", SOURCE: i.file, LINE: i.line,
                STATUS: STATUS_ERROR, ERROR: str(i),
            }
            for i in metadata.rejected
        ],
        columns=[FILE_NAME, SEQ_ID, SOURCE, LINE, STATUS, ERROR],
    )
    manifest = pd.concat([valid, rejected], ignore_index=True)
    for col in ("orig_width", "orig_height", "width", "height", BYTES):
        manifest[col] = manifest[col].fillna(-1).astype("int64")
    manifest[LINE] = manifest[LINE].astype("int64")
    manifest[ERROR] = manifest[ERROR].fillna("")
    manifest[SHA256] = manifest[SHA256].fillna("")
    for col in (FILE_NAME, SEQ_ID, SOURCE, STATUS, ERROR, SHA256):
        manifest[col] = manifest[col].astype(str)
    order = {s: i for i, s in enumerate(metadata.sources)}
    manifest["_src"] = manifest[SOURCE].map(order)
    manifest = manifest.sort_values(["_src", LINE], kind="stable").drop(columns="_src")
    manifest[DECODE] = decode
    return manifest[MANIFEST_COLUMNS].reset_index(drop=True)


def prepared_decode(images_dir: str) -> DecodeMode | None:
    """The decode mode a prepared folder was made with; None for a folder without a manifest (raw images).

    A manifest from before the modes existed has no ``decode`` column: its folder is exact.
    """
    import pyarrow.parquet as pq

    path = storage.join(images_dir, MANIFEST)
    if not storage.exists(path):
        return None
    fs, inner = storage.get_fs(path)
    with fs.open(inner, "rb") as f:
        if DECODE not in pq.read_schema(f).names:
            return DEFAULT_DECODE
    modes = set(pd.read_parquet(path, columns=[DECODE])[DECODE])
    if len(modes) > 1:  # only a hand-made manifest could: prepare refuses to mix
        raise InputError(f"{path}: rows of more than one decode mode {sorted(modes)}; prepare the folder again")
    return check_decode(modes.pop()) if modes else DEFAULT_DECODE


def refuse_other_decode(log: PartLog, out_dir: str, decode: DecodeMode, overwrite: bool) -> None:
    """A folder holds one decode mode: resuming or extending it in the other is refused, naming both."""
    pinned = log.pinned_settings()
    if overwrite or pinned is None:
        return
    before = pinned.get(DECODE, DEFAULT_DECODE)
    if before != decode:
        raise InputError(
            f"{out_dir}: this folder was prepared with --decode {before}; this run asks for --decode {decode}, and "
            f"one folder must not mix the two (training reads the mode from it). Use --decode {before}, another "
            "--out, or --overwrite to redo every file"
        )


def refuse_output_inside_images(out: str, images_dir: str, flag: str) -> None:
    """An output folder equal to or inside the images folder would overwrite (or mix with) the originals."""
    if storage.is_within(out, images_dir):
        raise InputError(
            f"{out}: {flag} is the images folder or inside it ({images_dir}); the job would write over or "
            f"among the original photos. Choose a folder outside {images_dir}"
        )


def prepare_images(
    metadata_paths: str | Sequence[str],
    images_dir: str,
    out_dir: str,
    settings: PrepareSettings = PrepareSettings(),
    overwrite: bool = False,
    rows_per_task: int = 32,
    connect: Callable[[], object] | None = None,
) -> tuple[PrepareSummary, pd.DataFrame]:
    """Run the preparation job on the current Ray cluster; returns the summary and the manifest.

    The metadata, the output folder and its state are checked first; ``connect`` (a job's start or join
    of Ray) is called only then, and only when there is something to prepare. Without it, Ray must be
    initialised by the caller (``camtrap.runtime.init_ray``), or Ray Data starts a local instance itself.
    """
    import ray

    start = time.perf_counter()
    metadata = read_metadata(metadata_paths)
    out_dir = str(out_dir)
    refuse_output_inside_images(out_dir, images_dir, "--out")
    storage.makedirs(out_dir)
    log = PartLog(storage.join(out_dir, STATE_DIR), key=FILE_NAME, columns=RESULT_COLUMNS)
    refuse_other_decode(log, out_dir, settings.decode, overwrite)
    log.pin_settings(settings.record(), overwrite, what="this output folder")

    logged = log.read()
    failed_before = set(logged.loc[logged[STATUS] != STATUS_OK, FILE_NAME])
    done = logged[logged[STATUS] == STATUS_OK]
    recorded_ok = set(done[FILE_NAME])
    if len(done):
        # Done only if its output is there at the recorded size (a missing file maps to NaN: not equal).
        done = done[done[FILE_NAME].map(_existing_outputs(out_dir)) == done[BYTES]]
    todo = metadata.frame.loc[~metadata.frame[FILE_NAME].isin(set(done[FILE_NAME])), [FILE_NAME, SEQ_ID]]

    if len(todo):
        if connect is not None:
            connect()
        # At least two blocks per CPU and a whole number of rounds, so the last blocks do not leave CPUs idle.
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        ds = frame_dataset(todo, rows_per_task, min_blocks=2 * cpus, block_multiple=cpus).map_batches(
            prepare_block,
            batch_size=None,
            batch_format="pandas",
            num_cpus=1,
            fn_kwargs={"images_dir": str(images_dir), "out_dir": out_dir, "settings": settings},
        )
        # One operator whose outputs are a few hundred bytes per image: Ray Data's per-operator
        # resource reservation only held tasks back here (bench: 1.37x -> 1.54x the single loop).
        ds.context.op_resource_reservation_enabled = False
        progress = Progress("prepare", len(todo))
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
                log.append(batch)
                progress.update(len(batch))
        finally:
            log.flush()
            progress.close()

    results = log.read()
    manifest = build_manifest(metadata, results, settings.decode)
    manifest_path = storage.join(out_dir, MANIFEST)
    # Atomic: a job killed (or a disk filled) mid-write must not leave a partial manifest for training to read.
    storage.write_bytes_atomic(manifest_path, storage.frame_bytes(manifest, "parquet"))
    storage.write_bytes_atomic(storage.join(out_dir, MANIFEST_CSV), storage.frame_bytes(manifest, "csv"))
    ok = int((manifest[STATUS] == STATUS_OK).sum())
    summary = PrepareSummary(
        input_rows=len(manifest),
        ok=ok,
        errors=len(manifest) - ok,
        processed=len(todo),
        retried=int(todo[FILE_NAME].isin(failed_before).sum()),
        redone=int(todo[FILE_NAME].isin(recorded_ok).sum()),
        skipped=len(metadata.frame) - len(todo),
        seconds=time.perf_counter() - start,
        out_dir=out_dir,
        manifest=manifest_path,
    )
    return summary, manifest
