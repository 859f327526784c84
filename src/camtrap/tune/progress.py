"""A sweep's console: one line per trial event instead of Tune's status tables.

Tune's own output (a configuration box, a status table every 30 s, a config and a result box per
trial) is turned off unless ``--verbose``; the sweep's state is in the sweep folder and on the
dashboard. What stays on the console is what a person watching a sweep asks: which trial started with
which parameters, how each ended (its best metric, stopped early or not, or its error), how many are
done and about how long the rest will take.
"""

from __future__ import annotations

import math
import time

from ray import tune


def _params(config: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(config.items()))


class SweepProgress(tune.Callback):
    """Prints ``tune: trial ... started / finished / failed`` lines with the count done and an ETA."""

    def __init__(self, total: int, metric: str, mode: str, budget_epochs: int):
        self.total, self.metric, self.mode, self.budget = total, metric, mode, budget_epochs
        self.best: dict[str, float] = {}
        self.epochs: dict[str, int] = {}
        self.done = 0
        self.start = time.monotonic()

    def _line(self, text: str) -> None:
        print(f"tune: {text}", flush=True)

    def _tally(self) -> str:
        self.done += 1
        left = self.total - self.done
        if left <= 0:
            return f"{self.done}/{self.total} trials done"
        eta = (time.monotonic() - self.start) / self.done * left
        return f"{self.done}/{self.total} trials done, ETA {eta / 60:.1f} min"

    def on_trial_start(self, iteration, trials, trial, **info):
        self._line(f"trial {trial.trial_id} started: {_params(trial.config)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        self.epochs[trial.trial_id] = int(result.get("training_iteration", 0))
        best = self.best.get(trial.trial_id)
        if best is None or (value < best if self.mode == "min" else value > best):
            self.best[trial.trial_id] = float(value)

    def on_trial_complete(self, iteration, trials, trial, **info):
        epochs = self.epochs.get(trial.trial_id, 0)
        how = "stopped early by the scheduler" if epochs < self.budget else "completed"
        best = self.best.get(trial.trial_id, math.nan)
        self._line(f"trial {trial.trial_id} {how} after {epochs} epochs: best {self.metric} {best:.5f} "
                   f"({self._tally()})")

    def on_trial_error(self, iteration, trials, trial, **info):
        error = str(getattr(trial, "error_file", "") or "see the trial's error.txt")
        self._line(f"trial {trial.trial_id} failed ({error}) ({self._tally()})")
