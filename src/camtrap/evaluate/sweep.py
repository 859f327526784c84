"""The page of a Ray Tune sweep, to read once it is done or to leave open beside Ray's dashboard while it runs.

``report.py --sweep SWEEP_DIR --out DIR`` writes into DIR:

* ``sweep_curves.png``: every trial's validation metric per epoch (Tune's ``training_iteration``, what
  ASHA compares at its rungs) on one chart; line style by status, so stopped and failed trials stand out.
* ``metric_vs_<parameter>.png``: one small scatter per searched parameter, each trial's best metric
  against its sampled value (log x-axis when the values span more than a decade); the marker says the
  status, and a trial without any metric yet (failed at once, or pending) sits on the bottom spine.
* ``index.html``: the header (status, counts, best trial), the trials table (parameters, status, best
  metric, epochs, the error of a failed trial) and the charts. While the sweep runs (no ``results.csv``
  yet) the page reloads itself every few seconds; once it is finished it stays still.

:func:`watch_sweep_report` renders again every few seconds until ``results.csv`` appears. The trials are
read by :mod:`camtrap.evaluate.sweep_trials`; nothing here imports torch or Ray.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from camtrap.data import storage
from camtrap.errors import InputError
from camtrap.evaluate.pages import INDEX_HTML, render_page
from camtrap.evaluate.report import png_bytes
from camtrap.evaluate.sweep_trials import SweepState, read_sweep

SWEEP_TEMPLATE = "sweep.html.j2"
SWEEP_CURVES_PNG = "sweep_curves.png"
#: One per searched parameter; the name is the parameter's with anything odd in a file name replaced.
PARAMETER_PNG = "metric_vs_{}.png"
#: How often the page of a running sweep reloads itself, unless a watch renders it at another pace.
REFRESH_SECONDS = 10
#: A parameter gets a log x-axis when its largest value is more than this times its smallest.
LOG_SPAN = 10.0
CURVES_SIZE_IN = (11.0, 5.0)
PARAMETER_SIZE_IN = (4.4, 3.4)
#: Room below the lowest metric, in fractions of the y-range, so no trial sits on the bottom spine where
#: the trials without a metric are drawn.
Y_MARGIN = 0.12


class Style(NamedTuple):
    color: str
    marker: str
    linestyle: str


#: Final statuses (``results.csv``) and live ones (Tune's, while the sweep runs); anything else is grey.
STATUS_STYLES: dict[str, Style] = {
    "completed": Style("C0", "o", "-"),
    "stopped_early": Style("C1", "s", "--"),
    "failed": Style("red", "X", ":"),
    "running": Style("C2", "^", "-"),
    "terminated": Style("C4", "D", "-"),
}
OTHER_STYLE = Style("grey", ".", "-.")


def _style(status: str) -> Style:
    return STATUS_STYLES.get(status, OTHER_STYLE)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_float(value: object) -> float | None:
    """A parameter value as a finite number, or None for a category (or a missing value)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def format_value(value: object) -> str:
    """A parameter or metric for the table: 4 significant digits, empty when missing."""
    if _missing(value):
        return ""
    return f"{value:.4g}" if isinstance(value, (float, np.floating)) else str(value)


def plot_sweep_curves(state: SweepState) -> Figure:
    """Every trial's metric per epoch, one line each (colour per trial, line style and marker per status)."""
    fig = Figure(figsize=CURVES_SIZE_IN, layout="constrained")
    ax = fig.subplots()
    drawn = 0
    for i, trial in enumerate(state.trials):
        if trial.history.empty:
            continue
        style = _style(trial.status)
        ax.plot(trial.history.index, trial.history.to_numpy(), color=f"C{i % 10}", linestyle=style.linestyle,
                marker=style.marker, markersize=4, label=f"{trial.short_id} ({trial.status})")
        drawn += 1
    if drawn:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="trial (status)",
                  title_fontsize=8)
    else:
        ax.text(0.5, 0.5, "no epoch reported yet", transform=ax.transAxes, ha="center", va="center")
    ax.set_title(f"{state.metric} per epoch ({drawn} of {len(state.trials)} trial(s) have reported an epoch)")
    ax.set_xlabel("epoch of the trial (Tune's training_iteration)")
    ax.set_ylabel(state.metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return fig


def _positions(values: list[object]) -> tuple[list[float | None], list[str] | None]:
    """x of each value: the number itself, or for categories an index into the returned tick labels."""
    numbers = [_as_float(v) for v in values]
    if all(n is not None for v, n in zip(values, numbers) if not _missing(v)):
        return numbers, None
    labels = sorted({str(v) for v in values if not _missing(v)})
    return [None if _missing(v) else float(labels.index(str(v))) for v in values], labels


def plot_parameter(state: SweepState, name: str) -> Figure:
    """Each trial's best metric against its value of ``name``; marker and colour per status.

    A trial with no metric (failed before its first epoch, or not started) is drawn on the bottom spine, so
    where failures sit in the space shows too. The best trial is ringed.
    """
    fig = Figure(figsize=PARAMETER_SIZE_IN, layout="constrained")
    ax = fig.subplots()
    xs, categories = _positions([t.params.get(name) for t in state.trials])
    best = state.best_trial()
    for status in dict.fromkeys(t.status for t in state.trials):
        style = _style(status)
        group = [(x, t) for x, t in zip(xs, state.trials) if t.status == status and x is not None]
        scored = [(x, t.best) for x, t in group if not math.isnan(t.best)]
        unscored = [x for x, t in group if math.isnan(t.best)]
        if scored:
            ax.scatter(*zip(*scored), color=style.color, marker=style.marker, s=36, label=status, zorder=3)
        if unscored:  # on the bottom spine, below every metric; the x-range must take them in by hand
            ax.scatter(unscored, [0.0] * len(unscored), transform=ax.get_xaxis_transform(), zorder=3,
                       color=style.color, marker=style.marker, s=36, label=f"{status} (no metric)", clip_on=False)
            ax.update_datalim([(x, 0.0) for x in unscored], updatey=False)
    if best is not None and (bx := xs[state.trials.index(best)]) is not None:
        ax.scatter([bx], [best.best], s=160, facecolors="none", edgecolors="gold", linewidths=2, label="best",
                   zorder=4)
    numbers = [x for x in xs if x is not None]
    if categories is not None:
        ax.set_xticks(range(len(categories)), categories, fontsize=8)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    elif numbers and min(numbers) > 0 and max(numbers) > LOG_SPAN * min(numbers):
        ax.set_xscale("log")
    ax.margins(y=Y_MARGIN)
    ax.set_title(f"{state.metric} vs {name}", fontsize=10)
    ax.set_xlabel(name + (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel(f"best {state.metric}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return fig


def parameter_png(name: str) -> str:
    return PARAMETER_PNG.format(re.sub(r"[^A-Za-z0-9_.-]", "_", name))


@dataclass(frozen=True)
class TrialRow:
    """One row of the page's table, its values already formatted (the template escapes them)."""

    trial_id: str
    short_id: str
    status: str
    params: list[str]
    best: str
    epochs: int
    error: str
    is_best: bool


def _rows(state: SweepState) -> list[TrialRow]:
    """The table: best metric first (by the sweep's mode), trials without a metric last, in folder order."""
    sign = 1.0 if state.mode == "min" else -1.0
    order = sorted(state.trials, key=lambda t: (math.isnan(t.best), 0.0 if math.isnan(t.best) else sign * t.best))
    best = state.best_trial()
    return [TrialRow(t.trial_id, t.short_id, t.status, [format_value(t.params.get(p)) for p in state.parameters],
                     format_value(t.best), t.epochs, t.error, t is best) for t in order]


def sweep_html(state: SweepState, charts: list[tuple[str, str]], refresh_s: int | None) -> str:
    """``index.html`` of the sweep report.

    Args:
        state: The sweep as read now.
        charts: ``(href, parameter)`` of each metric-vs-parameter PNG, in the order of ``state.parameters``.
        refresh_s: Seconds between reloads of the page while the sweep runs; None for no reloading.
    """
    best = state.best_trial()
    return render_page(
        SWEEP_TEMPLATE, state=state, rows=_rows(state), counts=state.counts(), best=best,
        best_params=", ".join(f"{k}={format_value(v)}" for k, v in best.params.items()) if best else "",
        best_value=format_value(best.best) if best else "", curves_href=SWEEP_CURVES_PNG, charts=charts,
        refresh_s=None if state.finished else refresh_s, rendered_at=time.strftime("%Y-%m-%d %H:%M:%S"),
    )


@dataclass
class SweepReportSummary:
    """What :func:`make_sweep_report` wrote; ``str()`` is what the report job prints."""

    sweep_dir: str
    out_dir: str
    finished: bool
    counts: dict[str, int]
    metric: str
    best: float = math.nan
    files: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line per render, for a watch."""
        counts = ", ".join(f"{n} {s}" for s, n in self.counts.items()) or "no trial folder yet"
        best = "" if math.isnan(self.best) else f"; best {self.metric} {self.best:.5f}"
        return f"{time.strftime('%H:%M:%S')} {'finished' if self.finished else 'running'}: {counts}{best}"

    def __str__(self) -> str:
        lines = [f"sweep report: {self.sweep_dir} -> {self.out_dir}", f"  {self.line()}"]
        lines += [f"  wrote {f}" for f in self.files]
        lines.append(f"  open {storage.join(self.out_dir, INDEX_HTML)}")
        return "\n".join(lines)


def make_sweep_report(sweep_dir: str, out_dir: str, mode: str = "min",
                      refresh_s: int = REFRESH_SECONDS) -> SweepReportSummary:
    """Write the sweep's page and charts under ``out_dir`` (made if missing), the page last.

    Every input is read before anything is written: a bad folder or file leaves the last good page alone.

    Args:
        sweep_dir: The folder or URI written by ``tune.py --out``, finished or still running.
        out_dir: The report folder or URI.
        mode: ``min`` or ``max``, which end of the metric is best.
        refresh_s: Seconds between reloads of the page while the sweep runs.

    Raises:
        InputError: ``sweep_dir`` is not a sweep folder, or one of its files is malformed (naming it).
    """
    sweep_dir, out_dir = str(sweep_dir), str(out_dir)
    state = read_sweep(sweep_dir, mode)
    storage.makedirs(out_dir)
    best = state.best_trial()
    summary = SweepReportSummary(sweep_dir, out_dir, state.finished, state.counts(), state.metric,
                                 best.best if best else math.nan)

    def save(name: str, data: bytes) -> None:
        path = storage.join(out_dir, name)
        storage.write_bytes_atomic(path, data)
        summary.files.append(path)

    save(SWEEP_CURVES_PNG, png_bytes(plot_sweep_curves(state)))
    charts = [(parameter_png(p), p) for p in state.parameters]
    for href, name in charts:
        save(href, png_bytes(plot_parameter(state, name)))
    save(INDEX_HTML, sweep_html(state, charts, refresh_s).encode())
    return summary


def watch_sweep_report(sweep_dir: str, out_dir: str, every_s: float, mode: str = "min",
                       echo: Callable[[str], None] = print,
                       sleep: Callable[[float], None] = time.sleep) -> SweepReportSummary:
    """Render the page every ``every_s`` seconds until the sweep has finished (``results.csv`` exists).

    The page reloads at the same pace. A bad folder fails the first render; after that, a file caught
    while Tune copies it is reported with ``echo`` and read again at the next render. Ctrl-C ends the
    watch and keeps the last page.
    """
    if not every_s > 0:
        raise InputError(f"--watch must be a positive number of seconds, got {every_s}")
    refresh = max(1, math.ceil(every_s))
    summary = make_sweep_report(sweep_dir, out_dir, mode, refresh)
    echo(summary.line())
    try:
        while not summary.finished:
            sleep(every_s)
            try:
                summary = make_sweep_report(sweep_dir, out_dir, mode, refresh)
            except InputError as e:
                echo(f"{time.strftime('%H:%M:%S')} not rendered, retrying in {every_s:g}s: {e}")
                continue
            echo(summary.line())
    except KeyboardInterrupt:
        echo("stopped watching; the page keeps its last render")
    return summary
