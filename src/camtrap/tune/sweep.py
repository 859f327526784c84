"""Ray Tune sweeps over a recipe's warmup/cosine schedule and crop ratio.

Ray 2.60 runs Ray Train V2, where a ``TorchTrainer`` cannot be handed to a ``Tuner`` directly. Each
trial is a Tune *function trainable* that builds the trial's recipe and calls the very same
:func:`camtrap.train.driver.run_training` as ``train.py``, with Ray Train's ``TuneReportCallback`` in the
trainer's run config: every epoch's report reaches Tune, so ASHA can stop weak trials early.

The trial's driver function reserves a sliver of CPU (it only waits on its trainer); concurrency is
capped by the search algorithm's ``max_concurrent`` instead, so on a 2-CPU laptop a trial's workers
and its Ray Data tasks get the CPUs.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from camtrap.config.recipe import Recipe, recipe_yaml
from camtrap.config.tune_space import (
    TuneSpace,
    apply_params,
    scheduler_max_t,
    to_ray_search_space,
    trial_epochs,
    validate_against_recipe,
)
from camtrap.console import verbose
from camtrap.data import storage
from camtrap.data.decoding import images_decode, pin_folder_decode
from camtrap.data.imageio import DEFAULT_DECODE
from camtrap.errors import InputError
from camtrap.run_layout import SWEEP_NAME, SweepLayout
from camtrap.train.dataset import load_training_table
from camtrap.tune.trainable import TRIAL_CPU, tune_trial


class SweepError(InputError):
    """A sweep that cannot run on this Ray cluster, with the reason."""

@dataclass
class SweepSummary:
    out_dir: str
    trials: int = 0
    completed: int = 0
    stopped_early: int = 0
    failed: int = 0
    best_params: dict = field(default_factory=dict)
    best_metric: float = math.nan
    metric: str = "val_metric"
    seconds: float = 0.0
    decode: str = DEFAULT_DECODE

    def __str__(self) -> str:
        same_pixels = "" if self.decode == DEFAULT_DECODE else f", on decode {self.decode} images as the trials were"
        return (
            f"tune: {self.trials} trials ({self.completed} completed, {self.stopped_early} stopped early by the "
            f"scheduler, {self.failed} failed) in {self.seconds:.0f}s\n"
            f"  best {self.metric}: {self.best_metric:.5f} with {self.best_params}\n"
            f"  results: {SweepLayout(self.out_dir).results}\n"
            f"  best recipe: {SweepLayout(self.out_dir).best_recipe} (use it as train.py --recipe{same_pixels})"
        )


def run_sweep(
    space: TuneSpace,
    recipe: Recipe,
    metadata: str | Sequence[str],
    labels: str,
    images_dir: str,
    out_dir: str,
    num_samples: int | None = None,
    max_concurrent: int | None = None,
    decode: str | None = None,
) -> SweepSummary:
    """Run (or resume) the sweep; writes ``results.csv`` and ``best_recipe.yaml`` to ``out_dir``.

    ``decode``: the decode mode of raw images (None: exact); a prepared folder brings its own. Every trial
    trains on the same pixels, and the sweep folder is pinned to their mode (``decode.json``) as a run
    folder is: a resumed sweep's ASHA would otherwise compare trials that saw different pixels.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from camtrap.runtime import state_api_available
    from camtrap.train.plan import recipe_classes
    from camtrap.tune.progress import SweepProgress

    if not state_api_available():
        raise SweepError(
            "this Ray has no state API (it comes with the dashboard): Ray Train could not release the "
            "workers of a trial the scheduler stops, and the next trial would wait for CPUs forever. "
            "Start the cluster with its dashboard (ray start --head, the default) or let tune.py start Ray."
        )
    start = time.perf_counter()
    out_dir = os.path.abspath(out_dir) if not storage.is_uri(out_dir) else out_dir
    storage.makedirs(out_dir)
    validate_against_recipe(space, recipe)
    # A wrong path, a broken labels file or a contradicted decode mode fails here, once, not in every trial.
    load_training_table(metadata, labels, images_dir, recipe_classes(recipe))
    decoding = images_decode(images_dir, decode)
    path = storage.join(out_dir, SWEEP_NAME)
    pin_folder_decode(SweepLayout(out_dir).decode, out_dir, decoding, before_modes=tune.Tuner.can_restore(path))
    data = {"metadata": metadata, "labels": labels, "images_dir": images_dir, "decode": decode}
    # The trial's driver function only waits on its trainer. Ray Data's tasks and the trainer's worker
    # group are not captured into the trial's placement group: they need CPUs left outside it.
    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, base=recipe.model_dump(mode="json"), space=space.model_dump(mode="json"),
                             data=data, sweep_dir=out_dir),
        {"CPU": TRIAL_CPU},
    )
    total = num_samples or space.num_samples
    print(f"tune: {total} trials of {space.name} ({space.scheduler.type}, at most "
          f"{max_concurrent or space.max_concurrent} at once), each up to {trial_epochs(space, recipe)} epochs; "
          f"Tune's own state: {path}", flush=True)
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=False, restart_errored=False)
    else:
        sched = space.scheduler
        scheduler = (
            ASHAScheduler(time_attr="training_iteration", max_t=scheduler_max_t(space, recipe),
                          grace_period=sched.grace_period, reduction_factor=sched.reduction_factor)
            if sched.type == "asha" else FIFOScheduler()
        )
        tuner = tune.Tuner(
            trainable,
            param_space=to_ray_search_space(space),
            tune_config=tune.TuneConfig(
                metric=space.metric,
                mode=space.mode,
                scheduler=scheduler,
                num_samples=total,
                search_alg=BasicVariantGenerator(
                    max_concurrent=max_concurrent or space.max_concurrent, random_state=space.search.seed
                ),
            ),
            run_config=tune.RunConfig(
                name=SWEEP_NAME,
                storage_path=out_dir,
                failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                # Tune's status tables and per-trial boxes only with --verbose: SweepProgress says what matters.
                verbose=None if verbose() else 0,
                callbacks=[SweepProgress(total, space.metric, space.mode, trial_epochs(space, recipe))],
            ),
        )
    # Tune's new console engine prints its configuration box whatever the verbosity; the legacy one at
    # verbosity 0 prints nothing. Read by this (the driver's) process when the run starts.
    engine = os.environ.get("RAY_AIR_NEW_OUTPUT")
    if not verbose():
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        grid = tuner.fit()
    finally:
        if engine is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = engine
    summary = summarize_sweep(grid, space, recipe, out_dir)
    summary.seconds = time.perf_counter() - start
    summary.decode = decoding.mode
    return summary


def trial_status(epochs: int, budget: int, error: BaseException | None) -> str:
    """``failed`` (raised), ``stopped_early`` (the scheduler ended it before its budget) or ``completed``."""
    if error is not None:
        return "failed"
    return "stopped_early" if epochs < budget else "completed"


def summarize_sweep(grid, space: TuneSpace, recipe: Recipe, out_dir: str) -> SweepSummary:
    """Write ``results.csv`` (one row per trial, failed ones with their error) and ``best_recipe.yaml``.

    The best trial is the one with the best ``space.metric`` over all its epochs (what ASHA compared),
    and its parameters are merged into the *full* recipe: the trial budget only sized the search.
    """
    budget = trial_epochs(space, recipe)
    best_col = f"best_{space.metric}"
    rows = []
    for result in grid:
        history = result.metrics_dataframe if result.metrics_dataframe is not None else pd.DataFrame()
        epochs = len(history)
        best = history[space.metric].agg(space.mode) if space.metric in history else math.nan
        error = "" if result.error is None else " ".join(str(result.error).split())[-500:]
        rows.append({"trial_id": os.path.basename(result.path or ""),
                     **{f"param_{k}": v for k, v in result.config.items()},
                     best_col: best, "epochs": epochs, "status": trial_status(epochs, budget, result.error),
                     "error": error})
    results = pd.DataFrame(rows, columns=None if rows else ["trial_id", best_col, "epochs", "status", "error"])
    summary = SweepSummary(out_dir=out_dir, metric=space.metric, trials=len(results))
    for status in ("completed", "stopped_early", "failed"):
        setattr(summary, status, int((results["status"] == status).sum()))
    storage.write_bytes_atomic(SweepLayout(out_dir).results, results.to_csv(index=False).encode())
    scored = results.dropna(subset=[best_col])
    if len(scored):
        best_row = scored.loc[scored[best_col].idxmin() if space.mode == "min" else scored[best_col].idxmax()]
        summary.best_metric = float(best_row[best_col])
        summary.best_params = {k[len("param_"):]: _plain(v) for k, v in best_row.items() if k.startswith("param_")}
        best = apply_params(recipe, space, summary.best_params)
        storage.write_bytes_atomic(SweepLayout(out_dir).best_recipe, recipe_yaml(best).encode())
    return summary


def _plain(value):
    """A numpy scalar from pandas as the Python number a recipe field expects."""
    return value.item() if hasattr(value, "item") else value
