"""A sweep's trials read back from its folder, finished or still running.

A finished sweep (``tune.py --out SWEEP_DIR``) has ``results.csv``: one row per trial with its parameters
(``param_<name>``), ``best_<metric>``, ``epochs``, ``status`` and ``error``, and that table is the truth.
While it runs there is no ``results.csv`` yet, only Ray Tune's experiment folder ``SWEEP_DIR/sweep/``,
where each trial has a folder (``<trainable>_<trial id>_<n>_<params>_<date>``, the ``trial_id`` of
``results.csv``) holding what Tune's loggers have written so far: ``params.json`` (the sampled config),
``progress.csv`` and ``result.json`` (one row / JSON line per epoch's report) and, for a trial that raised,
``error.txt``. Those are read instead, whatever is there; the per-epoch curves always come from them.

Tune's driver copies its experiment folder to ``SWEEP_DIR/sweep/`` every few seconds, so the live view
lags the Ray dashboard by about that much. Torch-free and Ray-free, like the rest of the reports.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from camtrap.data import storage
from camtrap.data.contract import ContractError, read_csv_file
from camtrap.errors import InputError
from camtrap.run_layout import SWEEP_NAME, VAL_METRIC, SweepLayout

# Ray Tune's names (ray.air.constants, ray.tune.result), restated: reports never import Ray.
PARAMS_FILE = "params.json"
PROGRESS_FILE = "progress.csv"
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
TRAINING_ITERATION = "training_iteration"
EXPERIMENT_STATE_GLOB = "experiment_state-*.json"
#: Tune's trial status (experiment state) -> the word the page shows while the sweep runs. Whether an
#: ended trial completed or was stopped early is decided by ``results.csv``, written when the sweep ends.
LIVE_STATUS = {"PENDING": "pending", "RUNNING": "running", "PAUSED": "paused",
               "TERMINATED": "terminated", "ERROR": "failed"}
#: ``results.csv`` columns besides ``param_<name>`` and ``best_<metric>``.
RESULTS_COLUMNS = ("trial_id", "epochs", "status", "error")
PARAM_PREFIX = "param_"
BEST_PREFIX = "best_"
#: As ``results.csv`` keeps a failed trial's error: whitespace collapsed, the last characters.
ERROR_CHARS = 500
_FAILURE_HEADER = re.compile(r"Failure # \d+ \(occurred at [^)]*\)\s*$")
_SHORT_ID = re.compile(r"_([0-9a-f]{5}_\d{5})(?:_|$)")


@dataclass(eq=False)  # compared by identity: its history is a Series, which has no truth value
class SweepTrial:
    """One trial: its sampled parameters, status, best metric and the metric per epoch reported so far."""

    trial_id: str
    params: dict[str, object]
    status: str
    best: float = math.nan
    epochs: int = 0
    error: str = ""
    #: ``training_iteration`` (1, 2, ...: the trial's epochs, as the scheduler counts them) -> metric.
    history: pd.Series = field(default_factory=lambda: pd.Series(dtype=float))

    @property
    def short_id(self) -> str:
        """Tune's trial id (``28ba6_00000``) out of the folder name, for legends and the table."""
        found = _SHORT_ID.search(self.trial_id)
        return found.group(1) if found else self.trial_id


@dataclass
class SweepState:
    """What a sweep folder holds now; ``finished`` once ``results.csv`` exists."""

    sweep_dir: str
    metric: str
    mode: str
    finished: bool
    trials: list[SweepTrial]
    parameters: list[str]
    source: str

    def best_trial(self) -> SweepTrial | None:
        scored = [t for t in self.trials if not math.isnan(t.best)]
        if not scored:
            return None
        return (min if self.mode == "min" else max)(scored, key=lambda t: t.best)

    def counts(self) -> dict[str, int]:
        """Trials per status, in the order they first appear."""
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.status] = out.get(t.status, 0) + 1
        return out


def _numbers(frame: pd.DataFrame, col: str, path: str) -> pd.Series:
    """``frame[col]`` as floats; a ContractError names the line of a cell that is not a number."""
    values = pd.to_numeric(frame[col], errors="coerce")
    bad = np.flatnonzero((values.isna() & frame[col].notna()).to_numpy())
    if len(bad):
        raise ContractError(f"{path}:{bad[0] + 2}: column '{col}': value {frame[col].iloc[bad[0]]!r} is not a number")
    return values.astype(float)


def _history(frame: pd.DataFrame, metric: str, path: str) -> pd.Series:
    """One trial's reports as ``training_iteration -> metric``; rows without the metric are left out."""
    if frame.empty:
        return pd.Series(dtype=float)
    if metric not in frame.columns:
        raise ContractError(f"{path}: no '{metric}' column (the sweep's metric); columns: {', '.join(frame.columns)}")
    x = (_numbers(frame, TRAINING_ITERATION, path) if TRAINING_ITERATION in frame.columns
         else pd.Series(np.arange(1.0, len(frame) + 1)))
    y = _numbers(frame, metric, path)
    keep = x.notna() & y.notna()
    return pd.Series(y[keep].to_numpy(), index=x[keep].astype(int).to_numpy(), dtype=float)


def _json_lines(path: str) -> list[dict]:
    """``result.json``: one JSON object per line. A cut last line is a report being written, and skipped."""
    lines = storage.read_bytes(path).decode("utf-8", errors="replace").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number < len(lines):
                raise ContractError(f"{path}:{number}: not a JSON object ({e.msg})") from None
    return rows


def _trial_files(exp_dir: str) -> dict[str, dict[str, int]]:
    """``{trial folder: {file name: size}}`` of the files Tune's loggers write, one listing for all trials."""
    if not storage.exists(exp_dir):
        return {}
    fs, inner = storage.get_fs(exp_dir)
    wanted = {PARAMS_FILE, PROGRESS_FILE, RESULT_FILE, ERROR_FILE}
    found: dict[str, dict[str, int]] = {}
    for path, info in fs.glob(posixpath.join(inner, "*", "*"), detail=True).items():
        folder, name = posixpath.split(path.rstrip("/"))
        if name in wanted and info.get("type") != "directory":
            found.setdefault(posixpath.basename(folder), {})[name] = int(info.get("size") or 0)
    return dict(sorted(found.items()))


def _read_trial_history(exp_dir: str, trial: str, files: dict[str, int], metric: str) -> pd.Series:
    """The epochs of one trial folder: ``progress.csv``, else ``result.json``, else none yet."""
    if files.get(PROGRESS_FILE):
        path = storage.join(exp_dir, trial, PROGRESS_FILE)
        return _history(read_csv_file(path), metric, path)
    if files.get(RESULT_FILE):
        path = storage.join(exp_dir, trial, RESULT_FILE)
        return _history(pd.DataFrame(_json_lines(path)), metric, path)
    return pd.Series(dtype=float)


def _read_params(exp_dir: str, trial: str, files: dict[str, int]) -> dict[str, object]:
    """The trial's sampled config: ``params.json``, else the ``config`` of its first report."""
    if files.get(PARAMS_FILE):
        path = storage.join(exp_dir, trial, PARAMS_FILE)
        try:
            params = json.loads(storage.read_bytes(path))
        except json.JSONDecodeError as e:
            raise ContractError(f"{path}: not JSON ({e.msg})") from None
        if not isinstance(params, dict):
            raise ContractError(f"{path}: not a JSON object of parameters")
        return params
    if files.get(RESULT_FILE):
        rows = _json_lines(storage.join(exp_dir, trial, RESULT_FILE))
        if rows and isinstance(rows[0].get("config"), dict):
            return rows[0]["config"]
    return {}


def _read_error(path: str) -> str:
    """A failed trial's ``error.txt`` as ``results.csv`` will keep it: without Tune's ``Failure # n``
    header lines, whitespace collapsed, the last characters."""
    text = storage.read_bytes(path).decode("utf-8", errors="replace")
    kept = [line for line in text.splitlines() if not _FAILURE_HEADER.match(line)]
    return " ".join(" ".join(kept).split())[-ERROR_CHARS:]


def _experiment_state(exp_dir: str) -> tuple[dict[str, str], str | None]:
    """``({trial folder: Tune status}, metric)`` from Tune's newest ``experiment_state-*.json``.

    That file is Tune's internal format (trials as JSON strings inside JSON), so it is read on a best
    effort basis: anything unexpected gives ``({}, None)`` and the statuses are guessed from the files.
    """
    try:
        fs, inner = storage.get_fs(exp_dir)
        newest = max(fs.glob(posixpath.join(inner, EXPERIMENT_STATE_GLOB)))
        state = json.loads(fs.cat_file(newest))
        statuses = {}
        for trial_json, _ in state["trial_data"]:
            trial = json.loads(trial_json)
            statuses[str(trial["relative_logdir"])] = str(trial["status"])
        metric = state.get("runner_data", {}).get("_metric")
        return statuses, metric if isinstance(metric, str) else None
    except Exception:  # noqa: BLE001 - see above: a guess from the files is the fallback
        return {}, None


def _live_trials(exp_dir: str, files: dict[str, dict[str, int]], metric: str, mode: str) -> list[SweepTrial]:
    """The trials of a running sweep, from Tune's per-trial files and, when readable, its experiment state."""
    statuses, _ = _experiment_state(exp_dir)
    trials = []
    for name, names in files.items():
        history = _read_trial_history(exp_dir, name, names, metric)
        error = _read_error(storage.join(exp_dir, name, ERROR_FILE)) if names.get(ERROR_FILE) else ""
        guess = "failed" if error else ("running" if len(history) else "pending")
        status = LIVE_STATUS.get(statuses.get(name, ""), guess)
        best = float(history.agg(mode)) if len(history) else math.nan
        trials.append(SweepTrial(trial_id=name, params=_read_params(exp_dir, name, names), status=status,
                                 best=best, epochs=len(history), error=error, history=history))
    return trials


def _read_results(path: str) -> tuple[pd.DataFrame, str, list[str]]:
    """``results.csv`` checked: the table, its metric (from ``best_<metric>``) and the parameters."""
    frame = read_csv_file(path)
    missing = [c for c in RESULTS_COLUMNS if c not in frame.columns]
    best = [c for c in frame.columns if c.startswith(BEST_PREFIX)]
    if missing or len(best) != 1:
        raise ContractError(
            f"{path}: missing column(s) {missing + ([] if len(best) == 1 else ['best_<metric>'])}; expected "
            f"the columns tune.py writes ({', '.join(RESULTS_COLUMNS)}, one best_<metric>, param_<name>...)"
        )
    frame[best[0]] = _numbers(frame, best[0], path)
    frame["epochs"] = _numbers(frame, "epochs", path).fillna(0).astype(int)
    for col in ("trial_id", "status", "error"):
        frame[col] = frame[col].fillna("").astype(str)
    return frame, best[0][len(BEST_PREFIX):], [c[len(PARAM_PREFIX):] for c in frame.columns
                                               if c.startswith(PARAM_PREFIX)]


def read_sweep(sweep_dir: str, mode: str = "min") -> SweepState:
    """The trials of the sweep in ``sweep_dir``: from ``results.csv`` once it exists, else from Tune's folder.

    Args:
        sweep_dir: A folder (or URI) written by ``tune.py --out``, finished or still running.
        mode: ``min`` or ``max``: which end of the metric is best (the space's ``mode``; the metrics of this
            project are losses).

    Raises:
        InputError: ``sweep_dir`` is missing or holds neither ``results.csv`` nor ``sweep/``.
        ContractError: ``results.csv`` or a trial's file is malformed, naming the file (and line).
    """
    sweep_dir = str(sweep_dir)
    if mode not in ("min", "max"):
        raise InputError(f"mode must be 'min' or 'max', got {mode!r}")
    if not storage.exists(sweep_dir):
        raise InputError(f"{sweep_dir}: sweep directory not found")
    layout = SweepLayout(sweep_dir)
    exp_dir = storage.join(sweep_dir, SWEEP_NAME)
    finished = storage.exists(layout.results)
    if not finished and not storage.exists(exp_dir):
        raise InputError(f"{sweep_dir}: no {posixpath.basename(layout.results)} and no {SWEEP_NAME}/ "
                         "(is it a sweep directory written by tune.py --out?)")
    files = _trial_files(exp_dir)
    if not finished:
        metric = _experiment_state(exp_dir)[1] or VAL_METRIC
        trials = _live_trials(exp_dir, files, metric, mode)
        parameters = list(dict.fromkeys(k for t in trials for k in t.params))
        return SweepState(sweep_dir, metric, mode, False, trials, parameters, exp_dir)
    frame, metric, parameters = _read_results(layout.results)
    trials = []
    for row in frame.to_dict("records"):
        name = row["trial_id"]
        history = _read_trial_history(exp_dir, name, files[name], metric) if name in files else pd.Series(dtype=float)
        trials.append(SweepTrial(trial_id=name, params={p: row[PARAM_PREFIX + p] for p in parameters},
                                 status=row["status"], best=float(row[BEST_PREFIX + metric]), epochs=row["epochs"],
                                 error=row["error"], history=history))
    return SweepState(sweep_dir, metric, mode, True, trials, parameters, layout.results)
