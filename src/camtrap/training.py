"""The worker loop and the stage runner: the seed's progressive-resolution recipe on Ray Train.

Each stage of a recipe is one ``TorchTrainer.fit()`` (the 2nd-place code ran each stage as a separate
fit too), started from the previous stage's best checkpoint. Inside a stage every worker:

* builds the timm model, loads the starting weights, freezes what the recipe says, wraps it in DDP
  (``ray.train.torch.prepare_model``);
* iterates its shard of the Ray Data pipeline (decode + augment run in Ray tasks, not in the worker),
  pads each batch to its largest image, normalises on the device;
* steps SGD with a per-step warmup + cosine LR, under AMP on CUDA (fp16 + GradScaler, or bf16);
* validates on its own slice of the validation rows, gathers every slice, and computes the image-level
  validation loss and the competition metric at sequence level (geometric mean over a sequence's
  images);
* checkpoints every epoch; Ray Train keeps the best ``keep_checkpoints`` by validation loss, plus the
  latest, from which a restarted worker group or a rerun of the command resumes.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from camtrap import storage
from camtrap.augment import DeviceNormalizer
from camtrap.classes import COMPETITION_CLASSES, EMPTY, SEQ_ID
from camtrap.contract import issues_frame
from camtrap.data import IMAGE, TARGET, TrainingTable, image_dataset, load_training_table, split_validation
from camtrap.errors import InputError
from camtrap.metrics import aggregate_by_sequence, class_priors, competition_loss
from camtrap.runtime import cpus_per_actor

CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
MODEL_FILE = "model.pt"
RECIPE_FILE = "recipe.yaml"
RAY_RESULTS_DIR = "ray_results"
MODEL_FORMAT = "camtrap.model/1"
VAL_LOSS = "val_loss"


# ---------------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------------


def resolve_amp(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, use GradScaler)`` for a recipe's ``amp`` on this device.

    ``auto`` is off on CPU, where bf16 autocast was measured about 12x slower than fp32 on CPUs without
    AVX512-BF16/AMX; on CUDA it is bf16 where the GPU supports it, else fp16 with a GradScaler (the
    seed's apex O1 equivalent).
    """
    if amp == "off":
        return None, False
    if device.type != "cuda":
        if amp == "auto":
            return None, False
        if amp == "fp16":
            raise ValueError("amp 'fp16' needs a CUDA device; use 'auto' or 'off' on CPU")
        return torch.bfloat16, False
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return (torch.float16, True) if amp == "fp16" else (torch.bfloat16, False)


def pad_batch(images: Sequence[np.ndarray], fill: np.ndarray) -> np.ndarray:
    """Stack uint8 HWC images of different sizes, padding bottom/right with ``fill`` (the mean pixel).

    Serengeti frames are all 4:3, so in the competition setting nothing is padded; a dataset mixing
    4:3 and 16:9 still trains, with padding that normalises to zero.
    """
    h = max(im.shape[0] for im in images)
    w = max(im.shape[1] for im in images)
    out = np.empty((len(images), h, w, 3), dtype=np.uint8)
    out[:] = fill
    for i, im in enumerate(images):
        out[i, : im.shape[0], : im.shape[1]] = im
    return out


def create_optimizer(params, cfg, lr: float) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``params`` (the trainable ones) at the stage's base LR."""
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)


def _autocast_factory(dtype: torch.dtype | None, device: torch.device):
    """A zero-argument context-manager factory: autocast to ``dtype``, or nothing."""
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def _gather(obj):
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def state_from_bytes(blob: bytes) -> dict:
    """Inverse of :func:`state_to_bytes`; ``weights_only=True``, so a crafted pickle is refused."""
    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def state_to_bytes(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def read_state_file(path: str) -> dict:
    """Load a ``best.pt``/``model.pt``/checkpoint written by this module, from a path or URI.

    Only tensors and plain containers load: a file that would run code when unpickled is refused
    (``InputError`` naming it) before any of its objects is built.
    """
    try:
        return state_from_bytes(storage.read_bytes(path))
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0][:300]
        raise InputError(f"{path}: refused: not a weights-only checkpoint ({reason})") from None


def train_loop_per_worker(config: dict) -> None:
    """One stage on one worker. ``config`` is built by :func:`stage_config` in the driver."""
    import ray
    import ray.train
    import ray.train.torch

    from camtrap.models import create_classifier, forward_by_shape, init_head_bias, train_mode
    from camtrap.recipe import Recipe, StageConfig
    from camtrap.schedule import build_scheduler

    recipe = Recipe.model_validate(config["recipe"])
    stage = StageConfig.model_validate(config["stage"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.set_num_threads(config["torch_threads"])
    torch.manual_seed(recipe.seed + rank)
    device = ray.train.torch.get_device()

    model = create_classifier(
        recipe.model,
        num_classes=len(config["classes"]),
        pretrained=None if config["init_weights"] is not None else recipe.pretrained,
        freeze=recipe.freeze,
    )
    if config["init_weights"] is not None:
        model.load_state_dict(state_from_bytes(ray.get(config["init_weights"])))
    else:
        init_head_bias(model, config["priors"])
    model = ray.train.torch.prepare_model(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = create_optimizer(params, recipe.optimizer, stage.lr)
    steps_per_epoch = config["steps_per_epoch"]
    scheduler = build_scheduler(optimizer, stage, steps_per_epoch)
    amp_dtype, use_scaler = resolve_amp(recipe.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    autocast = _autocast_factory(amp_dtype, device)
    criterion = torch.nn.MultiLabelSoftMarginLoss()
    norm = DeviceNormalizer(config["mean"], config["std"], device)
    unwrapped = model.module if hasattr(model, "module") else model

    start_epoch, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = read_state_file(os.path.join(d, CHECKPOINT_FILE))
        unwrapped.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, history = state["epoch"] + 1, state["history"]

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard(f"val_{rank}")
    batch_size = stage.batch_size
    for epoch in range(start_epoch, stage.epochs):
        t0 = time.perf_counter()
        train_mode(model)
        loss_sum, seen, steps = 0.0, 0, 0
        for batch in train_shard.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=True):
            if steps >= steps_per_epoch:
                break  # keep every rank on the same step count (DDP all-reduces each step)
            x = norm(pad_batch(batch[IMAGE], norm.fill))
            y = torch.from_numpy(np.stack(batch[TARGET])).to(device)
            with autocast():
                loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += loss.item() * len(y)
            seen += len(y)
            steps += 1
        train_seconds = time.perf_counter() - t0
        lr = optimizer.param_groups[0]["lr"]

        model.eval()
        rows = []
        with torch.no_grad():
            for batch in val_shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
                probs = forward_by_shape(unwrapped, list(batch[IMAGE]), norm, autocast=autocast)[:, 0]
                rows.append((list(batch[SEQ_ID]), probs, np.stack(batch[TARGET])))
        gathered = [r for part in _gather(rows) for r in part]
        totals = _gather((loss_sum, seen, train_seconds))
        metrics = _epoch_metrics(gathered, totals, config, lr, epoch, stage.name)
        history.append(metrics)
        if rank == 0:
            # Straight to the process's stdout: Train V2 routes a plain print() through the root
            # logger, which showed every epoch line twice in the driver's output.
            print(_format_epoch(metrics, stage.epochs), file=sys.__stdout__, flush=True)
            with tempfile.TemporaryDirectory() as d:
                torch.save(
                    {
                        "model": unwrapped.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "epoch": epoch,
                        "history": history,
                    },
                    os.path.join(d, CHECKPOINT_FILE),
                )
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)


def _epoch_metrics(rows, totals, config: dict, lr: float, epoch: int, stage_name: str) -> dict:
    seq_ids = [s for r in rows for s in r[0]]
    probs = np.concatenate([r[1] for r in rows]) if rows else np.zeros((0, len(config["classes"])))
    targets = np.concatenate([r[2] for r in rows]) if rows else np.zeros_like(probs)
    loss_sum = sum(t[0] for t in totals)
    seen = sum(t[1] for t in totals)
    seconds = max(t[2] for t in totals)
    logits = np.log(np.clip(probs, 1e-7, 1 - 1e-7)) - np.log1p(-np.clip(probs, 1e-7, 1 - 1e-7))
    val_loss = float(torch.nn.MultiLabelSoftMarginLoss()(torch.from_numpy(logits), torch.from_numpy(targets)))
    seqs, seq_probs = aggregate_by_sequence(seq_ids, probs, "gmean")
    first = {}
    for s, t in zip(seq_ids, targets):
        first.setdefault(s, t)
    seq_targets = np.stack([first[s] for s in seqs])
    priors = np.asarray(config["priors"])
    return {
        "stage": stage_name,
        "epoch": epoch + 1,
        "train_loss": loss_sum / max(seen, 1),
        VAL_LOSS: val_loss,
        "val_metric": competition_loss(seq_targets, seq_probs),
        "val_prior_metric": competition_loss(seq_targets, np.broadcast_to(priors, seq_targets.shape)),
        "val_images": len(seq_ids),
        "val_sequences": len(seqs),
        "images_per_s": seen / seconds if seconds > 0 else 0.0,
        "lr": lr,
        "epoch_seconds": seconds,
    }


def _format_epoch(m: dict, epochs: int) -> str:
    return (
        f"[{m['stage']}] epoch {m['epoch']}/{epochs}  train_loss {m['train_loss']:.4f}  "
        f"val_loss {m[VAL_LOSS]:.4f}  val_metric {m['val_metric']:.4f} (prior {m['val_prior_metric']:.4f})  "
        f"{m['images_per_s']:.1f} img/s  lr {m['lr']:.2e}"
    )


# ---------------------------------------------------------------------------------------------------
# Driver side
# ---------------------------------------------------------------------------------------------------


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
            f"({self.rejected_rows} rows rejected, see rejected_rows.csv) in {self.seconds:.0f}s"
        ]
        for s in self.stages:
            state = "already done, skipped" if s.skipped else f"{s.epochs} epochs"
            lines.append(
                f"  stage {s.name}: best val_loss {s.best_val_loss:.5f}, val metric {s.best_val_metric:.5f} "
                f"(class-prior baseline {s.prior_metric:.5f}) [{state}]"
            )
        lines.append(f"  model: {self.model_path}")
        return "\n".join(lines)


def run_training(
    recipe,
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
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from camtrap.augment import eval_transform, train_transform
    from camtrap.models import create_classifier, model_normalization
    from camtrap.recipe import recipe_yaml

    start = time.perf_counter()
    out_dir = os.path.abspath(out_dir) if not storage.is_uri(out_dir) else out_dir
    storage.makedirs(out_dir)
    pin_run_dir(out_dir, recipe, overwrite)
    storage.write_bytes_atomic(storage.join(out_dir, RECIPE_FILE), recipe_yaml(recipe).encode())

    table = load_training_table(metadata, labels, images_dir, recipe_classes(recipe))
    if recipe.validation.metadata is not None:
        val_table = load_training_table(recipe.validation.metadata, recipe.validation.labels, images_dir, table.classes)
        train_rows, val_rows = table.frame, val_table.frame
        table.issues.extend(val_table.issues)
        overlap = set(train_rows[SEQ_ID]) & set(val_rows[SEQ_ID])
        if overlap:
            raise InputError(f"{len(overlap)} sequences are in both training and validation, e.g. {sorted(overlap)[:3]}")
    else:
        train_rows, val_rows = split_validation(table, recipe.validation)
    issues_frame(table.issues).to_csv(storage.join(out_dir, "rejected_rows.csv"), index=False)
    train_seq = TrainingTable(train_rows, table.classes).sequence_targets()[1]
    priors = class_priors(train_seq)
    classes = list(table.classes)

    summary = TrainSummary(run_dir=out_dir, model_path=storage.join(out_dir, MODEL_FILE),
                           train_images=len(train_rows), val_images=len(val_rows), rejected_rows=len(table.issues))
    if _run_complete(out_dir, recipe):
        for stage in recipe.stages:
            summary.stages.append(_done_stage(stage.name, storage.join(out_dir, "stages", stage.name, BEST_FILE)))
        summary.already_complete = True
        summary.seconds = time.perf_counter() - start
        return summary

    probe = create_classifier(recipe.model, num_classes=len(classes), pretrained=None, freeze="none")
    mean, std = model_normalization(probe)
    del probe

    cpus, threads = worker_resources(num_workers, use_gpu, cpus_per_worker)
    storage_path = storage_path or storage.join(out_dir, RAY_RESULTS_DIR)
    prev_best: str | None = None
    all_history: list[dict] = []
    val_parts = [val_rows.iloc[r::num_workers] for r in range(num_workers)]
    for stage in recipe.stages:
        stage_dir = storage.join(out_dir, "stages", stage.name)
        best_path = storage.join(stage_dir, BEST_FILE)
        if storage.exists(best_path):
            all_history.extend(read_state_file(best_path)["history"])
            summary.stages.append(_done_stage(stage.name, best_path))
            prev_best = best_path
            continue
        init = ray.put(state_to_bytes(read_state_file(prev_best)["model"])) if prev_best else None
        steps_per_epoch = (len(train_rows) // num_workers) // stage.batch_size
        if steps_per_epoch < 1:
            raise InputError(
                f"stage {stage.name}: {len(train_rows)} training images over {num_workers} workers is less than "
                f"one batch of {stage.batch_size} per worker"
            )
        datasets = {
            "train": image_dataset(train_rows, images_dir, train_transform(stage.long_side, stage.crop_ratio, mean=None, std=None), shuffle=True),
            **{
                f"val_{r}": image_dataset(part, images_dir, eval_transform(stage.long_side, mean=None, std=None), shuffle=False)
                for r, part in enumerate(val_parts)
            },
        }
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={
                "recipe": recipe.model_dump(mode="json"),
                "stage": stage.model_dump(mode="json"),
                "classes": classes,
                "priors": priors.tolist(),
                "mean": list(mean),
                "std": list(std),
                "init_weights": init,
                "steps_per_epoch": steps_per_epoch,
                "torch_threads": threads,
            },
            scaling_config=ray.train.ScalingConfig(
                num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": cpus, **({"GPU": 1} if use_gpu else {})}
            ),
            run_config=ray.train.RunConfig(
                name=stage.name,
                storage_path=storage_path,
                checkpoint_config=ray.train.CheckpointConfig(
                    num_to_keep=recipe.keep_checkpoints,
                    checkpoint_score_attribute=VAL_LOSS,
                    checkpoint_score_order="min",
                ),
                failure_config=ray.train.FailureConfig(max_failures=max_failures),
                callbacks=list(callbacks or []),
            ),
            datasets=datasets,
            dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        )
        result = trainer.fit()
        if result.error is not None:
            raise result.error
        best_ckpt, best_metrics = min(result.best_checkpoints, key=lambda cm: cm[1][VAL_LOSS])
        with best_ckpt.as_directory() as d:
            state = read_state_file(os.path.join(d, CHECKPOINT_FILE))
        with result.checkpoint.as_directory() as d:
            history = read_state_file(os.path.join(d, CHECKPOINT_FILE))["history"]
        metrics = {k: best_metrics[k] for k in (VAL_LOSS, "val_metric", "val_prior_metric", "epoch")}
        storage.makedirs(stage_dir)
        storage.write_bytes_atomic(
            best_path, state_to_bytes({"model": state["model"], "metrics": metrics, "history": history})
        )
        pd.DataFrame(history).to_csv(storage.join(stage_dir, "metrics.csv"), index=False)
        all_history.extend(history)
        summary.stages.append(StageResult(stage.name, metrics[VAL_LOSS], metrics["val_metric"],
                                          metrics["val_prior_metric"], len(history), False, best_path))
        prev_best = best_path

    final = read_state_file(prev_best)
    save_model_file(summary.model_path, final["model"], recipe.model_dump(mode="json"), classes, priors,
                    recipe.eval_long_side, mean, std, final["metrics"])
    _write_history(out_dir, all_history)
    summary.seconds = time.perf_counter() - start
    return summary


def worker_resources(num_workers: int, use_gpu: bool, cpus_per_worker: float | None = None) -> tuple[float, int]:
    """(CPUs reserved per training worker, torch threads per worker).

    Threads follow the reservation (at least one), so two CPU workers on two cores do not each start
    a thread per core and fight over them.
    """
    cpus = cpus_per_worker or cpus_per_actor(num_workers, use_gpu)
    return cpus, max(1, int(round(cpus))) if not use_gpu else max(1, int(cpus))


def recipe_classes(recipe) -> tuple[str, ...] | None:
    """The class list a recipe trains on: the competition's 54, or ``None`` (the labels header's)."""
    return COMPETITION_CLASSES if recipe.classes == "competition" else None


def pin_run_dir(out_dir: str, recipe, overwrite: bool) -> None:
    """Refuse to continue a run directory made with another recipe; ``overwrite`` clears it instead.

    Resume trusts what a run directory holds (finished stages, Ray Train checkpoints). A second recipe
    there would silently mix two runs, e.g. stage 1 of the old recipe feeding stage 2 of the new.
    """
    import yaml

    from camtrap.recipe import Recipe, recipe_changes

    recipe_path = storage.join(out_dir, RECIPE_FILE)
    if overwrite:
        fs, inner = storage.get_fs(out_dir)
        for name in (RECIPE_FILE, MODEL_FILE, "stages", RAY_RESULTS_DIR, "metrics.csv", "metrics.json", "tensorboard"):
            path = inner.rstrip("/") + "/" + name
            if fs.exists(path):
                fs.rm(path, recursive=True)
        return
    if not storage.exists(recipe_path):
        return
    old = Recipe.from_dict(yaml.safe_load(storage.read_bytes(recipe_path)), source=recipe_path)
    changes = recipe_changes(old.to_dict(), recipe.to_dict())
    if changes:
        raise RunDirError(
            f"{recipe_path}: {out_dir} holds a run of another recipe ({'; '.join(changes[:5])}"
            f"{'; ...' if len(changes) > 5 else ''}); use another --out, or --overwrite to start it again"
        )


class RunDirError(InputError):
    """A run directory that cannot be resumed with the given recipe."""


def _run_complete(out_dir: str, recipe) -> bool:
    """Every stage's best checkpoint and ``model.pt`` are written: nothing is left to do."""
    names = [storage.join(out_dir, "stages", s.name, BEST_FILE) for s in recipe.stages]
    return storage.exists(storage.join(out_dir, MODEL_FILE)) and all(storage.exists(p) for p in names)


def _done_stage(name: str, best_path: str) -> StageResult:
    done = read_state_file(best_path)
    m = done["metrics"]
    return StageResult(name, m[VAL_LOSS], m["val_metric"], m["val_prior_metric"], len(done["history"]), True, best_path)


def _write_history(out_dir: str, history: list[dict]) -> None:
    """Every epoch of every stage as CSV, JSON and TensorBoard scalars."""
    frame = pd.DataFrame(history)
    frame.to_csv(storage.join(out_dir, "metrics.csv"), index=False)
    storage.write_bytes_atomic(storage.join(out_dir, "metrics.json"), json.dumps(history, indent=1).encode())
    if storage.is_uri(out_dir):
        return
    from tensorboardX import SummaryWriter

    with SummaryWriter(os.path.join(out_dir, "tensorboard")) as writer:
        for step, row in enumerate(history):
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    writer.add_scalar(f"{key}", value, step)
                    writer.add_scalar(f"{row['stage']}/{key}", value, row["epoch"])


def save_model_file(
    path: str,
    weights: dict,
    recipe: dict,
    classes: Sequence[str],
    priors: Sequence[float],
    inference_long_side: int,
    mean: Sequence[float],
    std: Sequence[float],
    metrics: dict | None = None,
) -> None:
    """Write a self-contained ``model.pt``: everything scoring needs, loadable with ``weights_only``."""
    storage.write_bytes_atomic(
        path,
        state_to_bytes(
            {
                "format": MODEL_FORMAT,
                "model": weights,
                "recipe": dict(recipe),
                "classes": list(classes),
                "priors": [float(p) for p in priors],
                "inference_long_side": int(inference_long_side),
                "mean": [float(m) for m in mean],
                "std": [float(x) for x in std],
                "metrics": dict(metrics or {}),
            }
        ),
    )


def load_model(path: str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild a trained classifier from ``model.pt`` (``weights_only=True``); returns (model, metadata)."""
    from camtrap.models import create_classifier

    state = read_state_file(path)
    if state.get("format") != MODEL_FORMAT:
        raise InputError(f"{path}: not a camtrap model file (format {state.get('format')!r})")
    model = create_classifier(state["recipe"]["model"], num_classes=len(state["classes"]), pretrained=None)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    meta = {k: v for k, v in state.items() if k != "model"}
    meta["empty_index"] = state["classes"].index(EMPTY) if EMPTY in state["classes"] else None
    return model, meta

