"""A training run's history, read back from its folder: every epoch of every stage, plotted per stage.

Training writes ``metrics.csv`` (columns :data:`camtrap.run_layout.HISTORY_COLUMNS`); the report needs
only :data:`CURVE_COLUMNS` of them. Column and file names come from :mod:`camtrap.run_layout`, the one
place training takes them from too, so reader and writer cannot drift apart, and neither module imports
torch. Plots are matplotlib ``Figure`` objects (no pyplot, no global state), so they can be drawn from
threads or Ray tasks without a display.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from camtrap.data import storage
from camtrap.data.contract import ContractError, read_csv_file
from camtrap.errors import InputError
from camtrap.run_layout import (
    EPOCH,
    LR,
    METRICS_CSV,
    STAGE,
    STAGES_DIR,
    TRAIN_LOSS,
    VAL_LOSS,
    VAL_METRIC,
    VAL_PRIOR_METRIC,
    RunLayout,
)

#: The history columns the curves and the stage table read; every other column training writes is ignored.
CURVE_COLUMNS: tuple[str, ...] = (STAGE, EPOCH, TRAIN_LOSS, VAL_LOSS, VAL_METRIC, VAL_PRIOR_METRIC, LR)
#: A CSV's first data row is line 2 (the header is line 1), as a text editor numbers it.
FIRST_DATA_LINE = 2
#: ``curves.png``: width, and height of each stage's row of panels, in inches.
CURVES_WIDTH_IN = 14.0
CURVES_ROW_HEIGHT_IN = 3.2


def _read_metrics_csv(path: str) -> pd.DataFrame:
    """One ``metrics.csv``, its curve columns numeric; a :class:`ContractError` names the line and column."""
    frame = read_csv_file(path)
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
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ContractError(
                f"{path}:{row + FIRST_DATA_LINE}: column '{col}': value {frame[col].iloc[row]!r} is not a number"
            )
        frame[col] = values
    return frame


def _recipe_stage_order(layout: RunLayout) -> list[str]:
    """Stage names in the order of the run's recipe; empty when it is missing or unreadable.

    The order is a nicety (a partial run's stages read in the order they ran, not by name), so a recipe
    that cannot be read falls back to name order instead of failing the report.
    """
    try:
        recipe = yaml.safe_load(storage.read_bytes(layout.recipe))
        return [str(s["name"]) for s in recipe["stages"] if s.get("name") is not None]
    except Exception:  # noqa: BLE001 - see above: sorting by name is the fallback
        return []


def read_run_metrics(run_dir: str) -> tuple[pd.DataFrame, str]:
    """Every epoch of every stage of a training run, and where it was read from.

    The run's root ``metrics.csv`` is written only when training ends; a run that is still going (or was
    stopped) has just ``stages/<name>/metrics.csv`` for its finished stages, so those are read instead, in
    the recipe's order, and the report works mid-run.

    Args:
        run_dir: A run folder written by ``train.py --out`` (a local path or a URI).

    Returns:
        The history (one row per epoch, :data:`CURVE_COLUMNS` numeric) and the path(s) it was read from.

    Raises:
        InputError: ``run_dir`` does not exist or holds no ``metrics.csv`` at all, naming the path.
        ContractError: a ``metrics.csv`` lacks a column or holds a non-number, naming the line and column.
    """
    run_dir = str(run_dir)
    if not storage.exists(run_dir):
        raise InputError(f"{run_dir}: run directory not found")
    layout = RunLayout(run_dir)
    if storage.exists(layout.metrics_csv):
        return _read_metrics_csv(layout.metrics_csv), layout.metrics_csv
    fs, inner = storage.get_fs(layout.path(STAGES_DIR))
    found = sorted(posixpath.basename(posixpath.dirname(p)) for p in fs.glob(posixpath.join(inner, "*", METRICS_CSV)))
    if not found:
        raise InputError(
            f"{layout.metrics_csv}: not found, and no {STAGES_DIR}/<name>/{METRICS_CSV} either "
            f"(is {run_dir} a run directory written by train.py?)"
        )
    in_recipe = [s for s in _recipe_stage_order(layout) if s in found]
    paths = [layout.stage_metrics(s) for s in in_recipe + [s for s in found if s not in in_recipe]]
    return pd.concat([_read_metrics_csv(p) for p in paths], ignore_index=True), ", ".join(paths)


def stage_names(history: pd.DataFrame) -> list[str]:
    """Stages in the order they ran (first appearance in the history)."""
    return [str(s) for s in pd.unique(history[STAGE])]


@dataclass(frozen=True)
class StageSummary:
    """One stage's row of the index page's table: its length and its best epoch by validation loss."""

    name: str
    epochs: int
    best_epoch: int
    val_loss: float
    val_metric: float
    val_prior_metric: float


def stage_summaries(history: pd.DataFrame) -> list[StageSummary]:
    """Each stage's best epoch, chosen by validation loss as training chooses ``best.pt``.

    A stage without any validation loss (all NaN) shows its last epoch instead, so the table never has a
    hole for a stage that did run.

    Args:
        history: Rows as :func:`read_run_metrics` returns them.

    Returns:
        One summary per stage, in the order the stages ran.
    """
    summaries = []
    for name in stage_names(history):
        s = history[history[STAGE] == name]
        best = s.loc[s[VAL_LOSS].idxmin()] if s[VAL_LOSS].notna().any() else s.iloc[-1]
        summaries.append(
            StageSummary(
                name=name,
                epochs=len(s),
                best_epoch=int(best[EPOCH]),
                val_loss=float(best[VAL_LOSS]),
                val_metric=float(best[VAL_METRIC]),
                val_prior_metric=float(best[VAL_PRIOR_METRIC]),
            )
        )
    return summaries


def plot_curves(history: pd.DataFrame) -> Figure:
    """One row per stage: loss (train, val), competition metric vs the prior baseline, LR; x = epoch.

    Each stage gets its own y-scales: a later stage's losses are far below the first epochs' and would be
    flattened on a shared axis. Points are marked so a one-epoch stage still shows.

    Args:
        history: Rows as :func:`read_run_metrics` returns them.

    Returns:
        A figure of ``len(stages)`` x 3 panels, not attached to pyplot (save it, nothing shows it).
    """
    stages = stage_names(history)
    fig = Figure(figsize=(CURVES_WIDTH_IN, CURVES_ROW_HEIGHT_IN * len(stages)), layout="constrained")
    axes = fig.subplots(len(stages), 3, squeeze=False)
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
        if (s[LR] > 0).all():  # a log axis shows warm-up and decay alike, but cannot hold a zero
            ax_lr.set_yscale("log")
        ax_lr.set_title(f"stage {name}: learning rate (end of epoch)")
        for ax in row:
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        ax_loss.legend(fontsize=8)
        ax_metric.legend(fontsize=8)
    return fig
