"""An append-only log of result rows, written as Parquet parts while a job runs: the basis of resume.

Preparation and scoring both stream results back to the driver block by block. Each flushed part is
written under a temporary name and renamed, so a job killed at any moment leaves only whole parts;
rerunning reads the parts, skips what they record, and appends the rest. The settings that determine
the results are pinned beside the parts so a rerun with other settings cannot mix outputs.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Sequence

import pandas as pd

from camtrap.data import storage
from camtrap.errors import InputError

#: Seconds between flushes of a running job's results: at most this much finished work is redone
#: after a kill. More frequent flushes mean more small parts to read back on resume.
FLUSH_SECONDS = float(os.environ.get("CAMTRAP_FLUSH_SECONDS", "20"))
#: Beside the parts: the settings they were made with.
SETTINGS_FILE = "settings.json"


class PartLog:
    """Parquet parts ``part-<time>-<id>.parquet`` under ``directory``; later rows win per key."""

    def __init__(self, directory: str, key: str, columns: Sequence[str]):
        self.dir = str(directory)
        self.key = key
        self.columns = list(columns)
        storage.makedirs(self.dir)
        self._buffer: list[pd.DataFrame] = []
        self._rows = 0
        self._last_flush = time.monotonic()

    def _parts(self) -> list[str]:
        fs, inner = storage.get_fs(self.dir)
        return sorted(fs.glob(inner.rstrip("/") + "/part-*.parquet"))

    def pinned_settings(self) -> dict | None:
        """The settings the parts here were made with (None before the first run); for a caller that wants
        to explain one setting's conflict in its own words before :meth:`pin_settings` refuses it."""
        path = storage.join(self.dir, SETTINGS_FILE)
        try:
            return json.loads(storage.read_bytes(path))
        except FileNotFoundError:
            return None
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None  # damaged: pin_settings says so

    def pin_settings(self, settings: dict, overwrite: bool, what: str = "this output folder") -> None:
        """Refuse to mix results made with other settings; ``overwrite`` clears the parts instead."""
        path = storage.join(self.dir, SETTINGS_FILE)
        if overwrite:
            fs, _ = storage.get_fs(self.dir)
            for part in self._parts():
                fs.rm(part)
        elif storage.exists(path):
            try:
                old = json.loads(storage.read_bytes(path))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise InputError(
                    f"{path}: damaged ({e}); it records the settings the results beside it were made with, so "
                    "they cannot be trusted: rerun with --overwrite to redo them, or choose another output"
                ) from None
            if old != json.loads(json.dumps(settings)):
                raise InputError(
                    f"{path}: {what} was made with {old}, not {settings}; "
                    "rerun with --overwrite to redo it, or choose another output"
                )
        storage.write_bytes_atomic(path, json.dumps(settings, sort_keys=True).encode())

    def read(self) -> pd.DataFrame:
        frames = [f for f in (self._read_part(storage.join(self.dir, os.path.basename(p))) for p in self._parts())
                  if f is not None]
        if not frames:
            return pd.DataFrame(columns=self.columns)
        # Later records win: a file that failed once and succeeded on a rerun counts as done.
        return pd.concat(frames, ignore_index=True).drop_duplicates(self.key, keep="last")

    def _read_part(self, path: str) -> pd.DataFrame | None:
        """One part, or None for a damaged one: set aside as ``<name>.damaged``, its rows are simply redone.

        Parts are written whole (temporary name, then rename), so damage comes from outside (a disk error,
        a copy cut short, a hand edit). Losing a part loses no input, only finished work.
        """
        try:
            frame = pd.read_parquet(path)
            missing = [c for c in self.columns if c not in frame.columns]
            if missing or self.key not in frame.columns:
                raise ValueError(f"missing column(s) {missing or [self.key]}")
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
            fs, inner = storage.get_fs(path)
            fs.mv(inner, inner + ".damaged")
            print(f"warning: {path}: damaged resume part ({e}); set aside as {os.path.basename(path)}.damaged, "
                  "its rows will be done again", file=sys.stderr, flush=True)
            return None
        return frame

    def append(self, records: pd.DataFrame, flush_rows: int = 2048, flush_seconds: float | None = None) -> None:
        self._buffer.append(records)
        self._rows += len(records)
        if self._rows >= flush_rows or time.monotonic() - self._last_flush > (flush_seconds or FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        frame = pd.concat(self._buffer, ignore_index=True)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        storage.write_bytes_atomic(storage.join(self.dir, name), storage.frame_bytes(frame, "parquet"))
        self._buffer, self._rows, self._last_flush = [], 0, time.monotonic()
