"""The plan of a training run: tables and split, class priors, normalisation, and the workers.

Resolved once in the driver before any worker starts, shared by every stage, printed at start and by
``train.py --dry-run`` (:func:`describe_plan`), and reused by the training benchmark rather than copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from camtrap.config.recipe import Recipe, StageConfig, crop_long_side
from camtrap.data.classes import COMPETITION_CLASSES, SEQ_ID
from camtrap.data.contract import ClassSetting, issues_frame
from camtrap.data.decoding import ImagesDecode, images_decode
from camtrap.errors import InputError
from camtrap.metrics import class_priors
from camtrap.runtime import ClusterView, cluster_view
from camtrap.train.dataset import TrainingTable, load_training_table, split_validation
from camtrap.train.scaling import WorkerPlan, plan_workers, scaled_stage


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
    workers: WorkerPlan
    rejected: pd.DataFrame
    decode: ImagesDecode

    @property
    def num_workers(self) -> int:
        return self.workers.num_workers

    @property
    def use_gpu(self) -> bool:
        return self.workers.use_gpu

    @property
    def cpus_per_worker(self) -> float:
        return self.workers.cpus_per_worker

    @property
    def torch_threads(self) -> int:
        return self.workers.torch_threads

    def stage(self, stage: StageConfig) -> StageConfig:
        """The stage as the workers run it: LR scaled to this run's worker count."""
        return scaled_stage(stage, self.workers.lr_scale)

    def steps_per_epoch(self, stage: StageConfig) -> int:
        """Optimizer steps per epoch: every rank takes the same number of full batches."""
        steps = (len(self.train_rows) // self.num_workers) // stage.batch_size
        if steps < 1:
            raise InputError(
                f"stage {stage.name}: {len(self.train_rows)} training images over {self.num_workers} workers is "
                f"less than one batch of {stage.batch_size} per worker"
            )
        return steps


def recipe_classes(recipe: Recipe) -> ClassSetting:
    """What the recipe asks of the labels header: the competition's exact 54, or ``"auto"`` / ``None``."""
    return {"competition": COMPETITION_CLASSES, "labels": None}.get(recipe.classes, "auto")


def describe_workers(plan: TrainingPlan) -> str:
    """The start line of a run: workers and their resources, device, and the LR scaling."""
    w = plan.workers
    device = "GPU" if w.use_gpu else "CPU"
    lines = [(f"train: {w.num_workers} {device} workers x {w.resources_per_worker} ({w.gpu_reason}); "
              f"{w.availability}; {w.decode_cpus:g} CPUs left to decode beside them")]
    if w.lr_scale != 1.0:
        lines.append(f"  lr x {w.lr_scale:g}: the recipe's lr is for {plan.recipe.scaling.num_workers} workers, this "
                     f"run has {w.num_workers} (scaling.scale_lr)")
    return "\n".join(lines)


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
    num_workers: int | None = None,
    use_gpu: bool | None = None,
    cpus_per_worker: float | None = None,
    view: ClusterView | None = None,
    decode: str | None = None,
) -> TrainingPlan:
    """Tables, split, priors, normalisation, the workers and the decode mode: the same for every stage of a run.

    ``num_workers``/``use_gpu``/``cpus_per_worker`` override the recipe's ``scaling`` (None: the
    recipe's); ``view`` is the cluster to plan on (default: the connected Ray's, or this machine).
    ``decode``: the mode for raw images (None: exact); a prepared folder brings its own, and another
    ``decode`` is refused (:func:`camtrap.data.decoding.images_decode`).
    """
    decode_choice = images_decode(images_dir, decode)
    from camtrap.train.models import create_classifier, model_normalization

    workers = plan_workers(recipe, view or cluster_view(), num_workers, use_gpu, cpus_per_worker)
    table = load_training_table(metadata, labels, images_dir, recipe_classes(recipe))
    train_rows, val_rows = _split(recipe, table, images_dir)
    priors = class_priors(TrainingTable(train_rows, table.classes).sequence_targets()[1])
    probe = create_classifier(recipe.model, num_classes=len(table.classes), pretrained=None, freeze="none")
    mean, std = model_normalization(probe)
    return TrainingPlan(
        recipe=recipe, images_dir=images_dir, train_rows=train_rows, val_rows=val_rows,
        classes=list(table.classes), priors=priors.tolist(), mean=mean, std=std, workers=workers,
        rejected=issues_frame(table.issues), decode=decode_choice,
    )



def describe_plan(plan: TrainingPlan, run_dir: str, storage_path: str) -> str:
    """What a run will do, for ``train.py --dry-run``: workers, device and AMP, batches, LRs, steps, storage."""
    w, recipe = plan.workers, plan.recipe
    amp = recipe.amp if not w.use_gpu else (
        "fp16 + GradScaler below compute capability 8.0, bf16 from 8.0" if recipe.amp == "auto" else recipe.amp)
    lines = [
        (f"train plan for recipe {recipe.name} ({recipe.model}, pretrained {recipe.pretrained or 'none'}, "
         f"freeze {recipe.freeze}); nothing was started"),
        describe_workers(plan),
        f"  torch threads per worker {w.torch_threads}; AMP {amp if w.use_gpu else 'off (CPU)'}",
        f"  images: {plan.decode.describe()}, recorded in model.pt",
        (f"  data: {len(plan.train_rows)} training / {len(plan.val_rows)} validation images, "
         f"{len(plan.classes)} classes ({len(plan.rejected)} rows rejected)"),
    ]
    for stage in recipe.stages:
        run_stage = plan.stage(stage)
        crop = crop_long_side(stage.long_side, stage.crop_ratio)
        try:
            steps = f"{plan.steps_per_epoch(stage)} steps/epoch"
        except InputError as e:
            steps = f"NOT RUNNABLE: {e}"
        lines.append(
            f"  stage {stage.name}: long side {stage.long_side} -> crop {crop}; batch {stage.batch_size}/worker, "
            f"{stage.batch_size * w.num_workers} global; lr {run_stage.lr:g} (min {run_stage.min_lr:g}), "
            f"warmup {stage.warmup_epochs:g} of {stage.epochs} epochs; {steps}"
        )
    lines.append(f"  run folder: {run_dir}; Ray Train checkpoints: {storage_path}")
    return "\n".join(lines)
