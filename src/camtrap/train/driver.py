"""The stage driver: the seed's progressive-resolution recipe as one ``TorchTrainer.fit()`` per stage.

Each stage of a recipe is a separate fit (the 2nd-place code ran each stage as a separate fit too),
started from the previous stage's best checkpoint. The driver's steps, each a function:

1. :func:`open_run_dir`: pin ``RUN_DIR`` to its recipe (or clear it with ``overwrite``);
2. :func:`plan_training`: read and split the tables, the class priors, the model's normalisation and
   each worker's resources (the benchmark reuses this step rather than copying it);
3. :func:`fit_stage`: one ``TorchTrainer`` per unfinished stage, whose best checkpoint becomes
   ``stages/<name>/best.pt``;
4. :func:`finish_run`: ``model.pt`` and the run's history.

:func:`run_training` chains them; rerunning it resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from camtrap import run_layout as layout
from camtrap.config.recipe import Recipe, StageConfig, recipe_changes, recipe_yaml
from camtrap.console import train_log_level
from camtrap.data import storage
from camtrap.data.decoding import ImagesDecode, pin_folder_decode
from camtrap.errors import InputError
from camtrap.model_file import read_state_file, save_model_file, state_to_bytes
from camtrap.run_layout import RunLayout
from camtrap.runtime import gpu_nodes_have_cuda
from camtrap.train.loop import DIVERGED
from camtrap.train.plan import TrainingPlan, describe_plan, describe_workers, plan_training
from camtrap.train.scaling import WorkerPlan


class TrainingDivergedError(InputError):
    """A stage's loss became non-finite; the run stops without writing a model from it."""


class RunDirError(InputError):
    """A run directory that cannot be resumed with the given recipe."""


@dataclass
class StageResult:
    name: str
    best_val_loss: float
    best_val_metric: float
    prior_metric: float
    epochs: int
    skipped: bool
    best_path: str


@dataclass
class TrainSummary:
    run_dir: str
    model_path: str
    stages: list[StageResult] = field(default_factory=list)
    train_images: int = 0
    val_images: int = 0
    rejected_rows: int = 0
    seconds: float = 0.0
    already_complete: bool = False

    def __str__(self) -> str:
        lines = [
            *(["train: nothing to do, this run is already complete (rerun with --overwrite to train again)"]
              if self.already_complete else []),
            (f"train: {self.train_images} training / {self.val_images} validation images "
             f"({self.rejected_rows} rows rejected, see {layout.REJECTED_ROWS_FILE}) in {self.seconds:.0f}s"),
        ]
        for s in self.stages:
            state = "already done, skipped" if s.skipped else f"{s.epochs} epochs"
            lines.append(
                f"  stage {s.name}: best val_loss {s.best_val_loss:.5f}, val metric {s.best_val_metric:.5f} "
                f"(class-prior baseline {s.prior_metric:.5f}) [{state}]"
            )
        lines.append(f"  model: {self.model_path}")
        return "\n".join(lines)


def open_run_dir(out_dir: str, recipe: Recipe, overwrite: bool) -> RunLayout:
    """Create ``out_dir``, pin it to ``recipe`` and write the resolved recipe there.

    Resume trusts what a run directory holds (finished stages, Ray Train checkpoints). A second recipe
    there would silently mix two runs, e.g. stage 1 of the old recipe feeding stage 2 of the new, so it
    is refused naming the changed fields; ``overwrite`` clears what training wrote instead.
    """
    import yaml

    out_dir = os.path.abspath(out_dir) if not storage.is_uri(out_dir) else out_dir
    run = RunLayout(out_dir)
    storage.makedirs(out_dir)
    if overwrite:
        fs, inner = storage.get_fs(out_dir)
        for name in layout.RUN_OWNED:
            path = inner.rstrip("/") + "/" + name
            if fs.exists(path):
                fs.rm(path, recursive=True)
    elif storage.exists(run.recipe):
        old = Recipe.from_dict(yaml.safe_load(storage.read_bytes(run.recipe)), source=run.recipe)
        changes = recipe_changes(old.to_dict(), recipe.to_dict())
        if changes:
            raise RunDirError(
                f"{run.recipe}: {out_dir} holds a run of another recipe ({'; '.join(changes[:5])}"
                f"{'; ...' if len(changes) > 5 else ''}); use another --out, or --overwrite to start it again"
            )
    storage.write_bytes_atomic(run.recipe, recipe_yaml(recipe).encode())
    return run


def pin_workers(run: RunLayout, workers: WorkerPlan) -> None:
    """Refuse to resume a run with another worker count; record the count of a new run.

    The per-step schedule of a stage is measured in steps per epoch, which the worker count sets: a
    checkpoint's scheduler position taken with 8 workers is the wrong point of the curve with 4, and
    the LR was scaled for 8. So a run folder is pinned to its worker count, as to its recipe.
    """
    record = {"num_workers": workers.num_workers, "use_gpu": workers.use_gpu, "lr_scale": workers.lr_scale,
              "cpus_per_worker": workers.cpus_per_worker}
    if storage.exists(run.scaling):
        old = json.loads(storage.read_bytes(run.scaling))
        if old.get("num_workers") != workers.num_workers:
            raise RunDirError(
                f"{run.scaling}: {run.root} was trained with {old.get('num_workers')} workers; resuming it with "
                f"{workers.num_workers} would continue the schedule at a step measured for the old count. Use "
                f"--num-workers {old.get('num_workers')}, another --out, or --overwrite"
            )
    storage.write_bytes_atomic(run.scaling, json.dumps(record, indent=1).encode())


def pin_decode(run: RunLayout, decode: ImagesDecode) -> None:
    """Pin the run folder to its decode mode (:func:`camtrap.data.decoding.pin_folder_decode`); a run from
    before the modes existed (``scaling.json`` but no ``decode.json``) was trained on exact pixels."""
    pin_folder_decode(run.decode, run.root, decode, before_modes=storage.exists(run.scaling), error=RunDirError)


def stage_loop_config(plan: TrainingPlan, stage: StageConfig, init_weights, cuda: bool = True,
                      tables: StageTables | None = None) -> dict[str, Any]:
    """The ``train_loop_config`` of one stage's trainer (plain data and object refs).

    ``cuda`` False: the workers hold GPUs that have no CUDA device (a simulated cluster), so they
    compute on their CPUs. ``tables``: the run's training and validation rows in the object store,
    from which every worker builds its own seeded epochs (:mod:`camtrap.train.epochs`); ``None`` leaves
    them out, for a loop that reads its data otherwise (the benchmark's plain baseline).
    """
    return {
        **(tables.config() if tables is not None else {}),
        "epoch_offset": sum(s.epochs for s in plan.recipe.stages[: _stage_index(plan.recipe, stage)]),
        "recipe": plan.recipe.model_dump(mode="json"),
        "stage": plan.stage(stage).model_dump(mode="json"),
        "use_cuda": plan.use_gpu and cuda,
        "classes": plan.classes,
        "priors": plan.priors,
        "mean": list(plan.mean),
        "std": list(plan.std),
        "init_weights": init_weights,
        "steps_per_epoch": plan.steps_per_epoch(stage),
        "torch_threads": plan.torch_threads,
        "decode": plan.decode.read,
    }


@dataclass
class StageTables:
    """The run's training and validation rows as :class:`~camtrap.train.epochs.EpochTable` in the object
    store: put once per run, read zero-copy by every worker of every stage."""

    train: Any
    val: Any
    train_rows: int
    val_rows: int
    images_dir: str

    @classmethod
    def put(cls, plan: TrainingPlan) -> StageTables:
        import ray

        from camtrap.train.epochs import EpochTable

        return cls(ray.put(EpochTable.from_frame(plan.train_rows, plan.classes)),
                   ray.put(EpochTable.from_frame(plan.val_rows, plan.classes)),
                   len(plan.train_rows), len(plan.val_rows), plan.images_dir)

    def config(self) -> dict[str, Any]:
        return {"train_table": self.train, "val_table": self.val, "train_rows": self.train_rows,
                "val_rows": self.val_rows, "images_dir": self.images_dir}


def _stage_index(recipe: Recipe, stage: StageConfig) -> int:
    return [s.name for s in recipe.stages].index(stage.name)


def fit_stage(
    plan: TrainingPlan,
    stage: StageConfig,
    run: RunLayout,
    prev_best: str | None,
    tables: StageTables,
    storage_path: str,
    max_failures: int,
    callbacks: Sequence = (),
) -> tuple[StageResult, list[dict]]:
    """One ``TorchTrainer.fit()``; writes ``stages/<name>/best.pt`` and ``metrics.csv``.

    Resumes from Ray Train's latest checkpoint under ``storage_path/<stage name>`` when there is one.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from camtrap.train.loop import train_loop_per_worker

    cuda = gpu_nodes_have_cuda("train") if plan.use_gpu else False
    init = ray.put(state_to_bytes(read_state_file(prev_best)["model"])) if prev_best else None
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=stage_loop_config(plan, stage, init, cuda=cuda, tables=tables),
        torch_config=TorchConfig(backend="nccl" if cuda else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=plan.num_workers, use_gpu=plan.use_gpu, resources_per_worker=plan.workers.resources_per_worker,
        ),
        run_config=ray.train.RunConfig(
            name=stage.name,
            storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=plan.recipe.keep_checkpoints,
                checkpoint_score_attribute=layout.VAL_LOSS,
                checkpoint_score_order="min",
            ),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            logging_config=ray.train.LoggingConfig(log_level=train_log_level()),
            callbacks=list(callbacks),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        text = str(result.error)
        if DIVERGED in text:  # a user-fixable setting (LR, AMP): one error line, no model.pt written
            line = next(s for s in text.splitlines() if DIVERGED in s)
            raise TrainingDivergedError(line[line.index(DIVERGED):].strip()) from None
        raise result.error
    best_ckpt, best_metrics = min(result.best_checkpoints, key=lambda cm: cm[1][layout.VAL_LOSS])
    with best_ckpt.as_directory() as d:
        weights = read_state_file(os.path.join(d, layout.CHECKPOINT_FILE))["model"]
    with result.checkpoint.as_directory() as d:
        history = read_state_file(os.path.join(d, layout.CHECKPOINT_FILE))["history"]
    metrics = {k: best_metrics[k] for k in layout.BEST_METRICS}
    best_path = run.stage_best(stage.name)
    storage.makedirs(run.stage_dir(stage.name))
    storage.write_bytes_atomic(best_path, state_to_bytes({"model": weights, "metrics": metrics, "history": history}))
    storage.write_bytes_atomic(run.stage_metrics(stage.name), pd.DataFrame(history).to_csv(index=False).encode())
    result = StageResult(stage.name, metrics[layout.VAL_LOSS], metrics[layout.VAL_METRIC],
                         metrics[layout.VAL_PRIOR_METRIC], len(history), False, best_path)
    return result, history


def done_stage(best_path: str) -> tuple[StageResult, list[dict]]:
    """A finished stage, read back from its ``best.pt``: its result and history."""
    done = read_state_file(best_path)
    m, history = done["metrics"], done["history"]
    name = os.path.basename(os.path.dirname(best_path.rstrip("/")))
    return (StageResult(name, m[layout.VAL_LOSS], m[layout.VAL_METRIC], m[layout.VAL_PRIOR_METRIC],
                        len(history), True, best_path), history)


def run_complete(run: RunLayout, recipe: Recipe) -> bool:
    """Every stage's best checkpoint and ``model.pt`` are written: nothing is left to do."""
    return storage.exists(run.model) and all(storage.exists(run.stage_best(s.name)) for s in recipe.stages)


def write_history(run: RunLayout, history: list[dict]) -> None:
    """Every epoch of every stage as CSV, JSON and TensorBoard scalars (written locally, then uploaded
    when the run lives on object storage, where TensorBoard reads it as well)."""
    import tempfile

    from tensorboardX import SummaryWriter

    storage.write_bytes_atomic(run.metrics_csv, pd.DataFrame(history).to_csv(index=False).encode())
    storage.write_bytes_atomic(run.metrics_json, json.dumps(history, indent=1).encode())
    with tempfile.TemporaryDirectory() as tmp:
        local = run.tensorboard if not storage.is_uri(run.root) else tmp
        with SummaryWriter(local) as writer:
            for step, row in enumerate(history):
                for key, value in row.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                        writer.add_scalar(f"{key}", value, step)
                        writer.add_scalar(f"{row[layout.STAGE]}/{key}", value, row[layout.EPOCH])
        if local == tmp:
            fs, inner = storage.get_fs(run.tensorboard)
            fs.put(tmp.rstrip("/") + "/", inner, recursive=True)


def finish_run(plan: TrainingPlan, run: RunLayout, last_best: str, history: list[dict]) -> None:
    """``model.pt`` from the last stage's best weights, and the whole run's history."""
    final = read_state_file(last_best)
    save_model_file(run.model, final["model"], plan.recipe.model_dump(mode="json"), plan.classes, plan.priors,
                    plan.recipe.eval_long_side, plan.mean, plan.std, final["metrics"], decode=plan.decode.mode)
    write_history(run, history)


def dry_run(recipe: Recipe, metadata: str | Sequence[str], labels: str, images_dir: str, out_dir: str,
            storage_path: str | None = None, **workers: Any) -> str:
    """The plan :func:`run_training` would follow, as text; reads the tables, writes and starts nothing.

    ``workers``: ``num_workers``, ``use_gpu``, ``cpus_per_worker`` and ``decode`` as :func:`run_training`
    takes them.
    """
    run = RunLayout(os.path.abspath(out_dir) if not storage.is_uri(out_dir) else out_dir)
    plan = plan_training(recipe, metadata, labels, images_dir, **workers)
    return describe_plan(plan, run.root, storage_path or run.ray_results)


def run_training(
    recipe: Recipe,
    metadata: str | Sequence[str],
    labels: str,
    images_dir: str,
    out_dir: str,
    num_workers: int | None = None,
    use_gpu: bool | None = None,
    cpus_per_worker: float | None = None,
    max_failures: int = 2,
    storage_path: str | None = None,
    callbacks: Sequence | None = None,
    overwrite: bool = False,
    decode: str | None = None,
) -> TrainSummary:
    """Run every stage of ``recipe``; rerunning the same call resumes where it stopped.

    A finished run is a fast no-op (no trainer starts). ``out_dir`` is pinned to its recipe: a rerun
    with another recipe is refused naming the changed fields, unless ``overwrite`` clears the run.

    ``callbacks`` go to every stage's ``RunConfig`` (a Tune trial passes ``TuneReportCallback`` so
    each epoch's report reaches Tune and ASHA can stop a weak trial). ``decode``: the decode mode of raw
    images (None: exact); a prepared folder brings its own (:func:`camtrap.train.plan.plan_training`).
    """
    start = time.perf_counter()
    run = open_run_dir(out_dir, recipe, overwrite)
    plan = plan_training(recipe, metadata, labels, images_dir, num_workers, use_gpu, cpus_per_worker, decode=decode)
    pin_decode(run, plan.decode)
    pin_workers(run, plan.workers)
    print(describe_workers(plan), flush=True)
    storage.write_bytes_atomic(run.rejected_rows, plan.rejected.to_csv(index=False).encode())
    summary = TrainSummary(run_dir=run.root, model_path=run.model, train_images=len(plan.train_rows),
                           val_images=len(plan.val_rows), rejected_rows=len(plan.rejected))
    if run_complete(run, recipe):
        summary.stages = [done_stage(run.stage_best(s.name))[0] for s in recipe.stages]
        summary.already_complete = True
        summary.seconds = time.perf_counter() - start
        return summary

    storage_path = storage_path or run.ray_results
    tables = StageTables.put(plan)
    prev_best: str | None = None
    all_history: list[dict] = []
    for stage in recipe.stages:
        best_path = run.stage_best(stage.name)
        if storage.exists(best_path):
            result, history = done_stage(best_path)
        else:
            result, history = fit_stage(plan, stage, run, prev_best, tables, storage_path, max_failures,
                                        callbacks or ())
        summary.stages.append(result)
        all_history.extend(history)
        prev_best = best_path

    finish_run(plan, run, prev_best, all_history)
    summary.seconds = time.perf_counter() - start
    return summary
