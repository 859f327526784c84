"""The worker side of a stage: what every Ray Train worker runs (``train_loop_per_worker``).

Each worker:

* builds the timm model, loads the starting weights (the previous stage's best, or the recipe's
  pretrained weights with the head bias at the class priors), freezes what the recipe says, and wraps
  it in DDP (``ray.train.torch.prepare_model``);
* builds its own seeded epoch each epoch (:mod:`camtrap.train.epochs`: a permutation of the whole
  table seeded by the recipe's seed and the epoch, this rank's slice, per-image augmentation seeds;
  decode + augment run in Ray Data tasks, not in the worker), pads each batch to its largest image,
  normalises on the device;
* steps the optimizer with the per-step warmup + cosine LR, under AMP on CUDA (fp16 + GradScaler, or
  bf16);
* validates on its own slice of the validation rows, gathers every slice, and computes the image-level
  validation loss and the competition metric at sequence level (:func:`epoch_metrics`);
* reports every epoch; rank 0 attaches a checkpoint from which a restarted worker group or a rerun of
  the command resumes.

``config`` is built in the driver by :func:`camtrap.train.driver.stage_loop_config`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from camtrap import run_layout as layout
from camtrap.config.recipe import OptimizerConfig, Recipe, StageConfig
from camtrap.console import quiet_train_worker
from camtrap.data.classes import SEQ_ID
from camtrap.metrics import aggregate_by_sequence, competition_loss, logit
from camtrap.model_file import read_state_file, state_from_bytes
from camtrap.train.augment import DeviceNormalizer, eval_transform, train_transform
from camtrap.train.batches import train_batches
from camtrap.train.dataset import IMAGE, TARGET
from camtrap.train.epochs import epoch_dataset, stage_indices, validation_indices
from camtrap.train.models import (
    create_classifier,
    forward_by_shape,
    in_batch_layout,
    init_head_bias,
    train_mode,
)
from camtrap.train.schedule import build_scheduler

AutocastFactory = Callable[[], contextlib.AbstractContextManager]


def resolve_amp(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, use GradScaler)`` for a recipe's ``amp`` on this device.

    ``auto`` is off on CPU, where bf16 autocast was measured about 12x slower than fp32 on CPUs without
    AVX512-BF16/AMX; on CUDA it is :func:`auto_amp` of the device's compute capability.
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
        amp = auto_amp(torch.cuda.get_device_capability(device))
    return (torch.float16, True) if amp == "fp16" else (torch.bfloat16, False)


def auto_amp(capability: tuple[int, int]) -> str:
    """``amp: auto`` on a CUDA device of this compute capability: ``bf16`` from Ampere (8.0) on, else ``fp16``.

    Not ``torch.cuda.is_bf16_supported()``: it counts emulated bf16 on V100/T4 (7.x), where bf16 is slow
    and fp16 with a GradScaler is what the seed ran (apex O1 on V100s).
    """
    return "bf16" if tuple(capability) >= (8, 0) else "fp16"


def autocast_factory(dtype: torch.dtype | None, device: torch.device) -> AutocastFactory:
    """A zero-argument context-manager factory: autocast to ``dtype``, or nothing."""
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def create_optimizer(params, cfg: OptimizerConfig, lr: float) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``params`` (the trainable ones) at the stage's base LR."""
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)


def gather(obj: Any) -> list[Any]:
    """``obj`` from every rank (a one-element list outside DDP)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]


def epoch_metrics(
    rows: Sequence[tuple[list[str], np.ndarray, np.ndarray]],
    totals: Sequence[tuple[float, int, float]],
    classes: Sequence[str],
    priors: Sequence[float],
    lr: float,
    epoch: int,
    stage_name: str,
) -> dict[str, Any]:
    """One epoch's report from every rank's validation rows and training totals.

    ``rows``: ``(seq_ids, probabilities, targets)`` per validation batch; ``totals``: ``(loss sum,
    images, seconds)`` per rank. The image-level validation loss is ``MultiLabelSoftMarginLoss`` on the
    logits of the (float32) probabilities; the metric is the competition's at sequence level, next to
    what predicting the training priors scores on the same sequences.
    """
    seq_ids = [s for r in rows for s in r[0]]
    probs = np.concatenate([r[1] for r in rows]) if rows else np.zeros((0, len(classes)))
    targets = np.concatenate([r[2] for r in rows]) if rows else np.zeros_like(probs)
    loss_sum = sum(t[0] for t in totals)
    seen = sum(t[1] for t in totals)
    seconds = max(t[2] for t in totals)
    val_loss = float(torch.nn.MultiLabelSoftMarginLoss()(torch.from_numpy(logit(probs)), torch.from_numpy(targets)))
    seqs, seq_probs = aggregate_by_sequence(seq_ids, probs, "gmean")
    first: dict[str, np.ndarray] = {}
    for s, t in zip(seq_ids, targets):
        first.setdefault(s, t)
    seq_targets = np.stack([first[s] for s in seqs])
    prior_probs = np.broadcast_to(np.asarray(priors), seq_targets.shape)
    return {
        layout.STAGE: stage_name,
        layout.EPOCH: epoch + 1,
        layout.TRAIN_LOSS: loss_sum / max(seen, 1),
        layout.VAL_LOSS: val_loss,
        layout.VAL_METRIC: competition_loss(seq_targets, seq_probs),
        layout.VAL_PRIOR_METRIC: competition_loss(seq_targets, prior_probs),
        layout.VAL_IMAGES: len(seq_ids),
        layout.VAL_SEQUENCES: len(seqs),
        layout.IMAGES_PER_S: seen / seconds if seconds > 0 else 0.0,
        layout.LR: lr,
        layout.EPOCH_SECONDS: seconds,
    }


def format_epoch(m: dict[str, Any], epochs: int) -> str:
    """The one console line per epoch."""
    return (
        f"[{m[layout.STAGE]}] epoch {m[layout.EPOCH]}/{epochs}  train_loss {m[layout.TRAIN_LOSS]:.4f}  "
        f"val_loss {m[layout.VAL_LOSS]:.4f}  val_metric {m[layout.VAL_METRIC]:.4f} "
        f"(prior {m[layout.VAL_PRIOR_METRIC]:.4f})  {m[layout.IMAGES_PER_S]:.1f} img/s  lr {m[layout.LR]:.2e}"
    )


def _build_model(recipe: Recipe, config: dict[str, Any]) -> torch.nn.Module:
    """The stage's starting model: the previous stage's best weights, else pretrained + prior head bias."""
    import ray

    init = config["init_weights"]
    model = create_classifier(
        recipe.model,
        num_classes=len(config["classes"]),
        pretrained=None if init is not None else recipe.pretrained,
        freeze=recipe.freeze,
    )
    if init is not None:
        model.load_state_dict(state_from_bytes(ray.get(init)))
    else:
        init_head_bias(model, config["priors"])
    return model


def _save_checkpoint_and_report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
    """Rank 0: report ``metrics`` with a checkpoint of ``state`` (Ray Train keeps the best by val loss)."""
    import ray.train

    with tempfile.TemporaryDirectory() as d:
        torch.save(state, os.path.join(d, layout.CHECKPOINT_FILE))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


@dataclass
class TrainStep:
    """What one optimizer step needs: the (DDP) model, optimizer, per-step scheduler, AMP and loss."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    autocast: AutocastFactory
    criterion: torch.nn.Module
    norm: DeviceNormalizer
    device: torch.device

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """One step on a batch from :func:`train_batches` (uint8 NHWC images); returns (loss sum as a
        tensor on the device, images)."""
        x = self.norm(batch[IMAGE])
        y = batch[TARGET].to(self.device, non_blocking=True)
        with self.autocast():
            logits = self.model(x)
        loss = self.criterion(logits.float(), y)  # the loss in fp32, whatever the forward ran in
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        # The loss stays on the device: reading it here (``.item()``) would make the CPU wait for every
        # step to finish before it queues the next one. :func:`train_one_epoch` reads them in groups.
        return loss.detach() * len(y), len(y)


#: Steps between reads of the losses from the device (one synchronisation per group, not per step); a
#: diverged stage still names its first non-finite step.
LOSS_READ_EVERY = 8


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the stage stops, and no model is written from it."""


#: How the driver recognises a divergence in Ray Train's error (its message starts the worker's error).
DIVERGED = "training diverged"


def train_one_epoch(step: TrainStep, batches, steps_per_epoch: int, where: str = "") -> tuple[float, int, float]:
    """The next ``steps_per_epoch`` steps from ``batches`` (the stage's batch iterator, which goes on into
    the next epoch); returns (loss sum, images, seconds).

    Every rank takes the same step count: DDP all-reduces each step, so a rank with one batch more
    would wait forever for the others (the stage's dataset holds exactly steps x batch rows an epoch).
    """
    t0 = time.perf_counter()
    train_mode(step.model)
    loss_sum, seen, steps = 0.0, 0, 0
    pending: list = []  # step losses not yet read back from the device

    def check() -> float:
        values = torch.stack([torch.as_tensor(v).reshape(()).double() for v in pending]).cpu().tolist()  # one sync
        for k, value in enumerate(values):
            if not math.isfinite(value):
                raise TrainingDiverged(f"{DIVERGED}: {where}step {steps - len(values) + k + 1}: the loss is {value} "
                                       f"(lower the LR, or use amp: off / bf16 if fp16 overflowed)")
        pending.clear()
        return sum(values)

    for batch in itertools.islice(batches, steps_per_epoch):
        batch_loss, n = step(batch)
        pending.append(batch_loss)
        seen += n
        steps += 1
        if len(pending) >= LOSS_READ_EVERY:
            loss_sum += check()
    if pending:
        loss_sum += check()
    return loss_sum, seen, time.perf_counter() - t0


def validate(model: torch.nn.Module, shard, batch_size: int, norm: DeviceNormalizer,
             autocast: AutocastFactory) -> list[tuple[list[str], np.ndarray, np.ndarray]]:
    """``(seq_ids, probabilities, targets)`` per batch of this worker's validation slice."""
    model.eval()
    rows = []
    with torch.no_grad():
        for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
            probs = forward_by_shape(model, list(batch[IMAGE]), norm, autocast=autocast)[:, 0]
            rows.append((list(batch[SEQ_ID]), probs, np.stack(batch[TARGET])))
    return rows


def worker_device(use_cuda: bool, rank: int) -> torch.device:
    """This worker's device: its GPU, or the CPU when the job runs on CPUs or its GPU has no CUDA device."""
    import ray.train.torch

    if use_cuda and torch.cuda.is_available():
        return ray.train.torch.get_device()
    if use_cuda and rank == 0:
        print("train: this worker holds a GPU but CUDA is not available: computing on CPU", file=sys.__stdout__,
              flush=True)
    return torch.device("cpu")


def _decode_cpus(world: int) -> float:
    """CPUs one rank's decode tasks may use: the cluster's CPUs not held by training workers, over the
    ranks (each runs its own Ray Data executor), at least one."""
    import ray

    free = ray.available_resources().get("CPU", 0.0)
    return max(1.0, free / max(world, 1))


def _resume(step: TrainStep, unwrapped: torch.nn.Module) -> tuple[int, list[dict[str, Any]]]:
    """(first epoch to run, history so far): from Ray Train's latest checkpoint of this stage, if any."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, []
    with checkpoint.as_directory() as d:
        state = read_state_file(os.path.join(d, layout.CHECKPOINT_FILE))
    unwrapped.load_state_dict(state["model"])
    step.optimizer.load_state_dict(state["optimizer"])
    step.scheduler.load_state_dict(state["scheduler"])
    step.scaler.load_state_dict(state["scaler"])
    return state["epoch"] + 1, state["history"]


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One stage on one worker."""
    import ray.train
    import ray.train.torch

    quiet_train_worker()  # Ray Data's and Ray Train's chatter from this worker: session logs, not the console
    recipe = Recipe.model_validate(config["recipe"])
    stage = StageConfig.model_validate(config["stage"])
    rank = ray.train.get_context().get_world_rank()
    torch.set_num_threads(config["torch_threads"])
    torch.manual_seed(recipe.seed + rank)
    device = worker_device(config["use_cuda"], rank)

    model = ray.train.torch.prepare_model(in_batch_layout(_build_model(recipe, config)), move_to_device=device)
    unwrapped = model.module if hasattr(model, "module") else model
    optimizer = create_optimizer([p for p in model.parameters() if p.requires_grad], recipe.optimizer, stage.lr)
    steps_per_epoch = config["steps_per_epoch"]
    scheduler = build_scheduler(optimizer, stage, steps_per_epoch)
    amp_dtype, use_scaler = resolve_amp(recipe.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    autocast = autocast_factory(amp_dtype, device)
    norm = DeviceNormalizer(config["mean"], config["std"], device)
    step = TrainStep(model, optimizer, scheduler, scaler, autocast, torch.nn.MultiLabelSoftMarginLoss(), norm, device)
    start_epoch, history = _resume(step, unwrapped)

    world = ray.train.get_context().get_world_size()
    images_dir, decode_cpus, decode = config["images_dir"], _decode_cpus(world), config["decode"]
    train_tf = train_transform(stage.long_side, stage.crop_ratio, mean=None, std=None)
    val_ds = epoch_dataset(config["val_table"], images_dir, eval_transform(stage.long_side, mean=None, std=None),
                           validation_indices(config["val_rows"], rank, world), seed=None, epoch=0,
                           max_cpus=decode_cpus, decode=decode)
    # One dataset for the stage's remaining epochs: its decode tasks run on into the next epoch while this
    # one validates and checkpoints. The run's epoch numbers, not the stage's: stage 2 must not replay
    # stage 1's orders and crops.
    run_epochs = [config["epoch_offset"] + e for e in range(start_epoch, stage.epochs)]
    batches = iter(())
    if run_epochs:
        indices, epochs_of = stage_indices(config["train_rows"], recipe.seed, run_epochs, rank, world,
                                           steps_per_epoch * stage.batch_size)
        train_ds = epoch_dataset(config["train_table"], images_dir, train_tf, indices, recipe.seed, epochs_of,
                                 max_cpus=decode_cpus, decode=decode)
        batches = iter(train_batches(train_ds, stage.batch_size, device, norm.fill))
    for epoch in range(start_epoch, stage.epochs):
        loss_sum, seen, train_seconds = train_one_epoch(step, batches, steps_per_epoch,
                                                        where=f"stage {stage.name}, epoch {epoch + 1}, ")
        lr = optimizer.param_groups[0]["lr"]
        rows = validate(unwrapped, val_ds, stage.batch_size, norm, autocast)
        gathered = [r for part in gather(rows) for r in part]
        totals = gather((loss_sum, seen, train_seconds))
        metrics = epoch_metrics(gathered, totals, config["classes"], config["priors"], lr, epoch, stage.name)
        history.append(metrics)
        if rank == 0:
            # Straight to the process's stdout: Train V2 routes a plain print() through the root
            # logger, which showed every epoch line twice in the driver's output.
            print(format_epoch(metrics, stage.epochs), file=sys.__stdout__, flush=True)
            _save_checkpoint_and_report(metrics, {
                "model": unwrapped.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "history": history,
            })
        else:
            ray.train.report(metrics)
    for _ in batches:  # nothing is left when every epoch held its steps x batch rows; read to the end all
        pass           # the same, so the dataset finishes instead of having its tasks cancelled
