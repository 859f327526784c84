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
from camtrap.data import storage
from camtrap.data.classes import COMPETITION_CLASSES, SEQ_ID
from camtrap.data.contract import issues_frame
from camtrap.errors import InputError
from camtrap.metrics import class_priors
from camtrap.model_file import read_state_file, save_model_file, state_to_bytes
from camtrap.run_layout import RunLayout
from camtrap.runtime import cpus_per_actor
from camtrap.train.dataset import TrainingTable, image_dataset, load_training_table, split_validation


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
            f"train: {self.train_images} training / {self.val_images} validation images "
            f"({self.rejected_rows} rows rejected, see {layout.REJECTED_ROWS_FILE}) in {self.seconds:.0f}s"
        ]
        for s in self.stages:
            state = "already done, skipped" if s.skipped else f"{s.epochs} epochs"
            lines.append(
                f"  stage {s.name}: best val_loss {s.best_val_loss:.5f}, val metric {s.best_val_metric:.5f} "
                f"(class-prior baseline {s.prior_metric:.5f}) [{state}]"
            )
        lines.append(f"  model: {self.model_path}")
        return "\n".join(lines)


@dataclass
class TrainingPlan:
    """Everything a run's stages share, resolved once in the driver before any worker starts."""

    recipe: Recipe
    images_dir: str
    train_rows: pd.DataFrame
    val_rows: pd.DataFrame
    classes: list[str]
    priors: list[float]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_workers: int
    use_gpu: bool
    cpus_per_worker: float
    torch_threads: int
    rejected: pd.DataFrame

    def steps_per_epoch(self, stage: StageConfig) -> int:
        """Optimizer steps per epoch: every rank takes the same number of full batches."""
        steps = (len(self.train_rows) // self.num_workers) // stage.batch_size
        if steps < 1:
            raise InputError(
                f"stage {stage.name}: {len(self.train_rows)} training images over {self.num_workers} workers is "
                f"less than one batch of {stage.batch_size} per worker"
            )
        return steps


def worker_resources(num_workers: int, use_gpu: bool, cpus_per_worker: float | None = None) -> tuple[float, int]:
    """(CPUs reserved per training worker, torch threads per worker).

    Threads follow the reservation (at least one), so two CPU workers on two cores do not each start
    a thread per core and fight over them.
    """
    cpus = cpus_per_worker or cpus_per_actor(num_workers, use_gpu)
    return cpus, max(1, int(round(cpus))) if not use_gpu else max(1, int(cpus))


def recipe_classes(recipe: Recipe) -> tuple[str, ...] | None:
    """The class list a recipe trains on: the competition's 54, or ``None`` (the labels header's)."""
    return COMPETITION_CLASSES if recipe.classes == "competition" else None


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


def _split(recipe: Recipe, table: TrainingTable, images_dir: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train rows, validation rows) by the recipe's validation setting; a sequence is never on both sides."""
    if recipe.validation.metadata is None:
        return split_validation(table, recipe.validation)
    val_table = load_training_table(recipe.validation.metadata, recipe.validation.labels, images_dir, table.classes)
    table.issues.extend(val_table.issues)
    overlap = set(table.frame[SEQ_ID]) & set(val_table.frame[SEQ_ID])
    if overlap:
        raise InputError(f"{len(overlap)} sequences are in both training and validation, e.g. {sorted(overlap)[:3]}")
    return table.frame, val_table.frame


def plan_training(
    recipe: Recipe,
    metadata: str | Sequence[str],
    labels: str,
    images_dir: str,
    num_workers: int,
    use_gpu: bool = False,
    cpus_per_worker: float | None = None,
) -> TrainingPlan:
    """Tables, split, priors, normalisation and worker resources: the same for every stage of a run."""
    from camtrap.train.models import create_classifier, model_normalization

    table = load_training_table(metadata, labels, images_dir, recipe_classes(recipe))
    train_rows, val_rows = _split(recipe, table, images_dir)
    priors = class_priors(TrainingTable(train_rows, table.classes).sequence_targets()[1])
    probe = create_classifier(recipe.model, num_classes=len(table.classes), pretrained=None, freeze="none")
    mean, std = model_normalization(probe)
    cpus, threads = worker_resources(num_workers, use_gpu, cpus_per_worker)
    return TrainingPlan(
        recipe=recipe, images_dir=images_dir, train_rows=train_rows, val_rows=val_rows,
        classes=list(table.classes), priors=priors.tolist(), mean=mean, std=std, num_workers=num_workers,
        use_gpu=use_gpu, cpus_per_worker=cpus, torch_threads=threads, rejected=issues_frame(table.issues),
    )


def stage_loop_config(plan: TrainingPlan, stage: StageConfig, init_weights) -> dict[str, Any]:
    """The ``train_loop_config`` of one stage's trainer (plain data and one object ref)."""
    return {
        "recipe": plan.recipe.model_dump(mode="json"),
        "stage": stage.model_dump(mode="json"),
        "classes": plan.classes,
        "priors": plan.priors,
        "mean": list(plan.mean),
        "std": list(plan.std),
        "init_weights": init_weights,
        "steps_per_epoch": plan.steps_per_epoch(stage),
        "torch_threads": plan.torch_threads,
    }


def stage_datasets(plan: TrainingPlan, stage: StageConfig) -> dict[str, Any]:
    """``train`` (split across workers, reshuffled each epoch) and one ``val_<rank>`` slice per worker."""
    from camtrap.train.augment import eval_transform, train_transform

    n = plan.num_workers
    train_tf = train_transform(stage.long_side, stage.crop_ratio, mean=None, std=None)
    eval_tf = eval_transform(stage.long_side, mean=None, std=None)
    return {
        "train": image_dataset(plan.train_rows, plan.images_dir, train_tf, shuffle=True),
        **{
            f"val_{r}": image_dataset(plan.val_rows.iloc[r::n], plan.images_dir, eval_tf, shuffle=False)
            for r in range(n)
        },
    }


def fit_stage(
    plan: TrainingPlan,
    stage: StageConfig,
    run: RunLayout,
    prev_best: str | None,
    storage_path: str,
    max_failures: int,
    callbacks: Sequence = (),
) -> tuple[StageResult, list[dict]]:
    """One ``TorchTrainer.fit()``; writes ``stages/<name>/best.pt`` and ``metrics.csv``.

    Resumes from Ray Train's latest checkpoint under ``storage_path/<stage name>`` when there is one.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from camtrap.train.loop import train_loop_per_worker

    init = ray.put(state_to_bytes(read_state_file(prev_best)["model"])) if prev_best else None
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=stage_loop_config(plan, stage, init),
        scaling_config=ray.train.ScalingConfig(
            num_workers=plan.num_workers, use_gpu=plan.use_gpu,
            resources_per_worker={"CPU": plan.cpus_per_worker, **({"GPU": 1} if plan.use_gpu else {})},
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
            callbacks=list(callbacks),
        ),
        datasets=stage_datasets(plan, stage),
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )
    result = trainer.fit()
    if result.error is not None:
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
    """Every epoch of every stage as CSV, JSON and (local runs) TensorBoard scalars."""
    storage.write_bytes_atomic(run.metrics_csv, pd.DataFrame(history).to_csv(index=False).encode())
    storage.write_bytes_atomic(run.metrics_json, json.dumps(history, indent=1).encode())
    if storage.is_uri(run.root):
        return
    from tensorboardX import SummaryWriter

    with SummaryWriter(run.tensorboard) as writer:
        for step, row in enumerate(history):
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    writer.add_scalar(f"{key}", value, step)
                    writer.add_scalar(f"{row[layout.STAGE]}/{key}", value, row[layout.EPOCH])


def finish_run(plan: TrainingPlan, run: RunLayout, last_best: str, history: list[dict]) -> None:
    """``model.pt`` from the last stage's best weights, and the whole run's history."""
    final = read_state_file(last_best)
    save_model_file(run.model, final["model"], plan.recipe.model_dump(mode="json"), plan.classes, plan.priors,
                    plan.recipe.eval_long_side, plan.mean, plan.std, final["metrics"])
    write_history(run, history)


def run_training(
    recipe: Recipe,
    metadata: str | Sequence[str],
    labels: str,
    images_dir: str,
    out_dir: str,
    num_workers: int = 2,
    use_gpu: bool = False,
    cpus_per_worker: float | None = None,
    max_failures: int = 2,
    storage_path: str | None = None,
    callbacks: Sequence | None = None,
    overwrite: bool = False,
) -> TrainSummary:
    """Run every stage of ``recipe``; rerunning the same call resumes where it stopped.

    A finished run is a fast no-op (no trainer starts). ``out_dir`` is pinned to its recipe: a rerun
    with another recipe is refused naming the changed fields, unless ``overwrite`` clears the run.

    ``callbacks`` go to every stage's ``RunConfig`` (a Tune trial passes ``TuneReportCallback`` so
    each epoch's report reaches Tune and ASHA can stop a weak trial).
    """
    start = time.perf_counter()
    run = open_run_dir(out_dir, recipe, overwrite)
    plan = plan_training(recipe, metadata, labels, images_dir, num_workers, use_gpu, cpus_per_worker)
    storage.write_bytes_atomic(run.rejected_rows, plan.rejected.to_csv(index=False).encode())
    summary = TrainSummary(run_dir=run.root, model_path=run.model, train_images=len(plan.train_rows),
                           val_images=len(plan.val_rows), rejected_rows=len(plan.rejected))
    if run_complete(run, recipe):
        summary.stages = [done_stage(run.stage_best(s.name))[0] for s in recipe.stages]
        summary.already_complete = True
        summary.seconds = time.perf_counter() - start
        return summary

    storage_path = storage_path or run.ray_results
    prev_best: str | None = None
    all_history: list[dict] = []
    for stage in recipe.stages:
        best_path = run.stage_best(stage.name)
        if storage.exists(best_path):
            result, history = done_stage(best_path)
        else:
            result, history = fit_stage(plan, stage, run, prev_best, storage_path, max_failures, callbacks or ())
        summary.stages.append(result)
        all_history.extend(history)
        prev_best = best_path

    finish_run(plan, run, prev_best, all_history)
    summary.seconds = time.perf_counter() - start
    return summary
