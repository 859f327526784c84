"""The train bench: steady-state images/s of ``run_training`` (Ray Train) vs a plain PyTorch DDP loop.

Both sides start from the platform's own plan (:func:`camtrap.train.driver.plan_training`: the same
rows, split, priors, normalisation and per-worker threads), so the only difference measured is the
orchestration. The plain baseline's training step deliberately mirrors the platform's
(:func:`camtrap.train.loop.train_loop_per_worker`): it is the code a user would write with torch
alone, and copying the step is what makes the comparison fair.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from camtrap import run_layout as layout
from camtrap.bench.common import TARGETS, GpuSampler, check_device, median, ratio, require_ray_gpus
from camtrap.config.recipe import Recipe, StageConfig, load_recipe
from camtrap.data import storage
from camtrap.data.classes import FILE_NAME
from camtrap.data.imageio import decode_image
from camtrap.errors import InputError
from camtrap.metrics import logit
from camtrap.run_layout import RunLayout
from camtrap.runtime import free_port
from camtrap.train.dataset import TARGET
from camtrap.train.driver import run_training, stage_loop_config
from camtrap.train.loop import autocast_factory, create_optimizer, gather, pad_batch, resolve_amp
from camtrap.train.plan import TrainingPlan, plan_training

#: What each baseline rank 0 writes: its per-epoch figures, read back by the driver.
PLAIN_EPOCHS_FILE = "epochs.json"


def bench_recipe(long_side: int = 96, epochs: int = 3, batch_size: int | None = None) -> Recipe:
    """A one-stage recipe derived from the packaged ``cpu_tiny``: its first stage at ``long_side``."""
    data = load_recipe("cpu_tiny").to_dict()
    stage = dict(data["stages"][0], name=f"bench{long_side}", long_side=long_side, epochs=epochs)
    if batch_size is not None:
        stage["batch_size"] = batch_size
    data.update(name="cpu_tiny_bench", stages=[stage])
    data.pop("inference_long_side", None)
    return Recipe.from_dict(data, source="cpu_tiny (bench stage)")


@dataclass
class TrainSetup:
    """What both sides of the train bench share: the platform's plan, plus what only the bench needs."""

    plan: TrainingPlan
    metadata: str
    labels: str
    device: str
    #: DataLoader processes per rank of the plain baseline.
    loader_workers: int
    steps_per_epoch: int

    @property
    def stage(self) -> StageConfig:
        return self.plan.recipe.stages[0]


def train_setup(
    metadata: str, labels: str, images_dir: str, recipe: Recipe, num_workers: int, device: str = "cpu",
    loader_workers: int | None = None,
) -> TrainSetup:
    """The plan :func:`run_training` makes (its own :func:`plan_training`), and the baseline's loaders.

    Calling the platform's plan step rather than redoing it keeps the two sides on the same rows,
    priors, normalisation and threads even as the platform changes.
    """
    import ray

    plan = plan_training(recipe, metadata, labels, images_dir, num_workers, use_gpu=device == "cuda")
    if loader_workers is None:
        # The CPUs the platform leaves to its Ray Data decode/augment tasks, split across the ranks; at
        # least one loader process per rank (0 would decode inside the training process, no overlap).
        free = ray.cluster_resources().get("CPU", os.cpu_count() or 1) - num_workers * plan.cpus_per_worker
        loader_workers = max(1, int(free // num_workers))
    steps = plan.steps_per_epoch(recipe.stages[0])
    return TrainSetup(plan, metadata, labels, device, loader_workers, steps)


def steady_rate(epochs: list[dict[str, Any]]) -> tuple[float, int, float]:
    """(images/s, images, seconds) over every epoch but the first (start-up, first-touch costs)."""
    later = epochs[1:]
    images = sum(e[layout.IMAGES_PER_S] * e[layout.EPOCH_SECONDS] for e in later)
    seconds = sum(e[layout.EPOCH_SECONDS] for e in later)
    return ratio(images, seconds), round(images), seconds


def run_platform_training(setup: TrainSetup, out_dir: str) -> dict[str, Any]:
    """One run of the real code path, timed from the call to its return; per-epoch figures from
    ``RUN_DIR/metrics.csv`` (images/s = training images of the epoch / wall time of its loop)."""
    plan = setup.plan
    start = time.perf_counter()
    run_training(plan.recipe, setup.metadata, setup.labels, plan.images_dir, out_dir,
                 num_workers=plan.num_workers, use_gpu=plan.use_gpu, overwrite=True)
    total = time.perf_counter() - start
    history = pd.read_csv(RunLayout(out_dir).metrics_csv)
    epochs = history[[layout.EPOCH, layout.IMAGES_PER_S, layout.EPOCH_SECONDS]].to_dict("records")
    return {"total_s": total, "epochs": epochs}


# ------------------------------------------------------------------------------ the plain DDP baseline


class _ImageRows:
    """A map-style dataset: decode each file as :func:`camtrap.train.dataset.decode_files`
    does, then apply the stage's transform (uint8 HWC out; normalised on the device)."""

    def __init__(self, files: list[str], targets: list[np.ndarray], images_dir: str, transform):
        self.files, self.targets, self.images_dir, self.transform = files, targets, images_dir, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        img = decode_image(storage.read_bytes(storage.join(self.images_dir, self.files[i])))
        return self.transform(np.asarray(img)), self.targets[i]


class ListPadCollate:
    """DataLoader collate of ``(image, target)`` items: uint8 images of possibly different sizes padded with
    :func:`camtrap.train.loop.pad_batch`, as tensors (so ``pin_memory`` can pin them)."""

    def __init__(self, fill: np.ndarray):
        self.fill = fill

    def __call__(self, items):
        images = pad_batch([im for im, _ in items], self.fill)
        return torch.from_numpy(images), torch.from_numpy(np.stack([t for _, t in items]).astype(np.float32))


def _list_collate(items):
    return [im for im, _ in items], np.stack([t for _, t in items]).astype(np.float32)


def _plain_ddp_worker(rank: int, cfg: dict[str, Any]) -> None:
    """One rank of the plain baseline: what a user would write with torch alone (DDP + DataLoader).

    ``cfg`` is the platform's own worker config (:func:`camtrap.train.driver.stage_loop_config`) plus
    the rows and the baseline's settings. The per-step work is the platform's: the same model, initial
    head bias, optimizer, LR schedule, AMP rule, loss, padding and on-device normalisation; what
    differs is the orchestration (``torch.multiprocessing`` + DataLoader workers instead of Ray Train +
    Ray Data). Per epoch, like the platform: train, validate this rank's slice, rank 0 checkpoints.
    """
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler

    from camtrap.train.augment import DeviceNormalizer, eval_transform, train_transform
    from camtrap.train.models import (
        create_classifier,
        forward_by_shape,
        in_batch_layout,
        init_head_bias,
        train_mode,
    )
    from camtrap.train.schedule import build_scheduler

    recipe = Recipe.model_validate(cfg["recipe"])
    stage = StageConfig.model_validate(cfg["stage"])
    world = cfg["num_workers"]
    cuda = cfg["device"] == "cuda"
    if cuda:
        torch.cuda.set_device(rank)  # before the process group: NCCL binds each rank to its current device
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(cfg["torch_threads"])
        torch.manual_seed(recipe.seed + rank)
        device = torch.device(f"cuda:{rank}" if cuda else "cpu")
        model = create_classifier(recipe.model, num_classes=len(cfg["classes"]), pretrained=None, freeze=recipe.freeze)
        init_head_bias(model, cfg["priors"])
        in_batch_layout(model).to(device)
        ddp = DistributedDataParallel(model, device_ids=[rank] if cuda else None)
        optimizer = create_optimizer([p for p in ddp.parameters() if p.requires_grad], recipe.optimizer, stage.lr)
        steps_per_epoch = cfg["steps_per_epoch"]
        scheduler = build_scheduler(optimizer, stage, steps_per_epoch)
        amp_dtype, use_scaler = resolve_amp(recipe.amp, device)
        scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
        autocast = autocast_factory(amp_dtype, device)
        criterion = torch.nn.MultiLabelSoftMarginLoss()
        norm = DeviceNormalizer(cfg["mean"], cfg["std"], device)
        train_rows, val_rows = cfg["train_rows"], cfg["val_rows"].iloc[rank::world]
        train_ds = _ImageRows(list(train_rows[FILE_NAME]), list(train_rows[TARGET]), cfg["images_dir"],
                              train_transform(stage.long_side, stage.crop_ratio, mean=None, std=None))
        val_ds = _ImageRows(list(val_rows[FILE_NAME]), list(val_rows[TARGET]), cfg["images_dir"],
                            eval_transform(stage.long_side, mean=None, std=None))
        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=recipe.seed)
        workers = cfg["loader_workers"]
        loader = DataLoader(train_ds, batch_size=stage.batch_size, sampler=sampler, drop_last=True,
                            num_workers=workers, persistent_workers=workers > 0, collate_fn=ListPadCollate(norm.fill))
        val_loader = DataLoader(val_ds, batch_size=stage.batch_size, num_workers=workers,
                                persistent_workers=workers > 0, collate_fn=_list_collate)
        epochs = []
        for epoch in range(stage.epochs):
            sampler.set_epoch(epoch)
            t0 = time.perf_counter()
            train_mode(ddp)
            seen = 0
            for steps, (images, targets) in enumerate(loader):
                if steps >= steps_per_epoch:
                    break  # the platform's rule: every rank takes the same number of steps
                x = norm(images)
                y = targets.to(device)
                with autocast():
                    loss = criterion(ddp(x), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                loss.item()  # the platform logs the loss every step (a device sync on CUDA)
                seen += len(y)
            train_seconds = time.perf_counter() - t0

            ddp.eval()
            val_loss, val_n = 0.0, 0
            with torch.no_grad():
                for images, targets in val_loader:
                    probs = forward_by_shape(model, images, norm, autocast=autocast)[:, 0]
                    logits = torch.from_numpy(logit(probs))
                    val_loss += float(criterion(logits, torch.from_numpy(targets).double())) * len(probs)
                    val_n += len(probs)
            totals = gather((seen, train_seconds, val_loss, val_n))
            seconds = max(t[1] for t in totals)
            epochs.append({layout.EPOCH: epoch + 1, layout.IMAGES_PER_S: ratio(sum(t[0] for t in totals), seconds),
                           layout.EPOCH_SECONDS: seconds})
            if rank == 0:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch},
                           os.path.join(cfg["out_dir"], layout.CHECKPOINT_FILE))
        if rank == 0:
            with open(os.path.join(cfg["out_dir"], PLAIN_EPOCHS_FILE), "w") as f:
                json.dump(epochs, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_plain_ddp(setup: TrainSetup, out_dir: str) -> dict[str, Any]:
    """One run of the baseline: ``torch.multiprocessing.spawn`` of the ranks, timed from the call to the
    ranks' exit (process start, imports and process group included, like the platform's total)."""
    import torch.multiprocessing as tmp

    plan = setup.plan
    os.makedirs(out_dir, exist_ok=True)
    cfg = stage_loop_config(plan, setup.stage, init_weights=None) | {
        "num_workers": plan.num_workers, "device": setup.device, "loader_workers": setup.loader_workers,
        "images_dir": plan.images_dir, "train_rows": plan.train_rows, "val_rows": plan.val_rows,
        "out_dir": out_dir,
    }
    saved = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT")}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    try:
        start = time.perf_counter()
        tmp.spawn(_plain_ddp_worker, args=(cfg,), nprocs=plan.num_workers, join=True)
        total = time.perf_counter() - start
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    with open(os.path.join(out_dir, PLAIN_EPOCHS_FILE)) as f:
        return {"total_s": total, "epochs": json.load(f)}


def synthetic_ceiling(setup: TrainSetup, steps: int = 30, warmup: int = 5) -> dict[str, Any]:
    """The device's ceiling for the stage: the platform's own step (:class:`camtrap.train.loop.TrainStep`:
    the model, optimizer, schedule, AMP rule, loss, normalisation) on one random batch already on the device,
    so no input pipeline is involved. 4:3 crops of the stage's size, the per-worker batch, one process."""
    from camtrap.config.recipe import crop_long_side
    from camtrap.train.augment import DeviceNormalizer
    from camtrap.train.dataset import IMAGE
    from camtrap.train.loop import TrainStep
    from camtrap.train.models import create_classifier, in_batch_layout
    from camtrap.train.schedule import build_scheduler

    plan, stage, device = setup.plan, setup.stage, torch.device(setup.device)
    recipe = plan.recipe
    model = in_batch_layout(create_classifier(recipe.model, num_classes=len(plan.classes), pretrained=None,
                                              freeze=recipe.freeze)).to(device)
    optimizer = create_optimizer([p for p in model.parameters() if p.requires_grad], recipe.optimizer, stage.lr)
    amp_dtype, use_scaler = resolve_amp(recipe.amp, device)
    step = TrainStep(model, optimizer, build_scheduler(optimizer, stage, steps + warmup),
                     torch.amp.GradScaler(device.type, enabled=use_scaler), autocast_factory(amp_dtype, device),
                     torch.nn.MultiLabelSoftMarginLoss(), DeviceNormalizer(plan.mean, plan.std, device), device)
    w = crop_long_side(stage.long_side, stage.crop_ratio)
    h = max(1, round(w * 3 / 4))
    gen = torch.Generator(device=device).manual_seed(0)
    batch = {IMAGE: torch.randint(0, 256, (stage.batch_size, h, w, 3), dtype=torch.uint8, device=device, generator=gen),
             TARGET: (torch.rand(stage.batch_size, len(plan.classes), device=device, generator=gen) > 0.9).float()}
    for _ in range(warmup):
        step(batch)
    float(step(batch)[0])  # waits for the device
    start = time.perf_counter()
    for _ in range(steps):
        loss, _ = step(batch)
    float(loss)
    seconds = time.perf_counter() - start
    return {"images_per_s": ratio(steps * stage.batch_size, seconds), "steps": steps, "seconds": seconds,
            "input": f"{w}x{h}", "batch_size": stage.batch_size}


# ------------------------------------------------------------------------------------------ the bench


def _train_side(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    steady = [steady_rate(r["epochs"]) for r in runs]
    return {
        "name": name,
        "runs": runs,
        "steady_images_per_s": [s[0] for s in steady],
        "steady_images": [s[1] for s in steady],
        "steady_seconds": [s[2] for s in steady],
        "first_epoch_images_per_s": [r["epochs"][0][layout.IMAGES_PER_S] for r in runs],
        "total_s": [r["total_s"] for r in runs],
        "median_steady_images_per_s": median([s[0] for s in steady]),
        "median_total_s": median([r["total_s"] for r in runs]),
    }


def bench_train(
    metadata: str, labels: str, images_dir: str, repeats: int = 3, long_side: int = 96, epochs: int = 3,
    batch_size: int | None = None, num_workers: int | None = None, device: str = "cpu",
    loader_workers: int | None = None,
) -> dict[str, Any]:
    """Steady-state training images/s: the platform's TorchTrainer vs a plain PyTorch DDP loop.

    Both sides train the same one-stage recipe (:func:`bench_recipe`: ``cpu_tiny``'s first stage at
    ``long_side`` for ``epochs`` epochs) on the same training rows (the platform's own split), with the
    same per-worker batch, steps per epoch, torch threads per process and device. Figures:

    * steady images/s: training images of epochs 2.. / the wall time of those epochs' training loops,
      data loading included (what :func:`camtrap.train.loop.epoch_metrics` reports per epoch, measured
      the same way on both sides: from the start of the epoch's batch iteration to its last optimizer
      step, images summed over ranks, seconds of the slowest rank). The first epoch (start-up,
      first-touch allocations, loader start) is excluded on both sides and reported on its own;
    * total wall time of each run, start-up, validation and checkpoints included, for honesty.

    The baseline's DataLoader gets, per rank, the CPUs the platform leaves to its Ray Data tasks (at
    least one process). Runs alternate (baseline first on even repeats, platform first on odd ones) so
    a drift in the machine's load hits both sides alike. The baseline's ranks are started with
    ``spawn``: a script calling this needs the ``if __name__ == "__main__":`` guard.
    """
    check_device(device)
    cuda = device == "cuda"
    if num_workers is None:
        num_workers = min(2, torch.cuda.device_count()) if cuda else 2
    if cuda:
        require_ray_gpus(num_workers)
    recipe = bench_recipe(long_side, epochs, batch_size)
    if epochs < 2:
        raise InputError("train bench: needs at least 2 epochs (the first is excluded from the steady rate)")
    setup = train_setup(metadata, labels, images_dir, recipe, num_workers, device, loader_workers)
    root = tempfile.mkdtemp(prefix="camtrap-bench-train-")
    platform_runs, plain_runs = [], []
    gpu: dict[str, list] = {"platform": [], "plain": []}
    try:
        for r in range(repeats):
            order = ("plain", "platform") if r % 2 == 0 else ("platform", "plain")
            for side in order:
                out = os.path.join(root, f"{side}{r}")
                with GpuSampler() as sampler:
                    if side == "plain":
                        plain_runs.append(run_plain_ddp(setup, out))
                    else:
                        platform_runs.append(run_platform_training(setup, out))
                gpu[side].append(sampler.summary())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ceiling = synthetic_ceiling(setup) if cuda else None
    platform_side = _train_side("Ray Train TorchTrainer (run_training)", platform_runs) | {"gpu": gpu["platform"]}
    plain_side = _train_side(f"plain DDP ({num_workers} spawned processes)", plain_runs) | {"gpu": gpu["plain"]}
    plan, stage = setup.plan, setup.stage
    return {
        "stage": "train",
        "device": device,
        "recipe": recipe.to_dict(),
        "model": recipe.model,
        "workers": num_workers,
        "cpus_per_worker": plan.cpus_per_worker,
        "torch_threads": plan.torch_threads,
        "loader_workers_per_rank": setup.loader_workers,
        "train_images": len(plan.train_rows),
        "val_images": len(plan.val_rows),
        "long_side": stage.long_side,
        "batch_size_per_worker": stage.batch_size,
        "steps_per_epoch": setup.steps_per_epoch,
        "epochs": stage.epochs,
        "repeats": repeats,
        "platform": platform_side,
        "baseline": plain_side,
        "ratio": ratio(platform_side["median_steady_images_per_s"], plain_side["median_steady_images_per_s"]),
        "ceiling": ceiling,
        "ceiling_ratio": ratio(platform_side["median_steady_images_per_s"], ceiling["images_per_s"]) if ceiling else None,
        "total_time_ratio": ratio(platform_side["median_total_s"], plain_side["median_total_s"]),
        "targets": {"ratio": TARGETS["train"]},
    }


def format_train(result: dict[str, Any]) -> str:
    """The console summary of :func:`bench_train`."""
    p, b = result["platform"], result["baseline"]
    lines = [
        (f"train ({result['device']}): {result['model']} at {result['long_side']} px, {result['workers']} workers x "
         f"batch {result['batch_size_per_worker']} x {result['steps_per_epoch']} steps, {result['epochs']} epochs "
         f"({result['train_images']} train / {result['val_images']} val images), {result['torch_threads']} torch "
         f"thread(s) per worker, median of {result['repeats']} runs"),
    ]
    for side in (b, p):
        lines.append(
            f"  {side['name']:<38} {side['median_steady_images_per_s']:7.1f} img/s after epoch 1   "
            f"(epoch 1: {median(side['first_epoch_images_per_s']):.1f} img/s; whole run {side['median_total_s']:.1f} s)"
        )
    if result.get("ceiling"):
        lines.append(f"  the device's ceiling (the same step on a batch already on it): "
                     f"{result['ceiling']['images_per_s']:.1f} img/s; platform = {result['ceiling_ratio']:.2f}x of it")
    if result["device"] == "cuda":
        for side in (b, p):
            g = side["gpu"][-1]
            lines.append(f"  GPU SM use, {side['name']}: " + (g["unavailable"] if "unavailable" in g else
                         f"{g['mean_sm_percent']:.0f}% mean over the run, {g['busy_mean_sm_percent']:.0f}% in busy "
                         f"samples"))
    lines.append(
        f"  platform / plain DDP = {result['ratio']:.2f}x (target >= {result['targets']['ratio']})   "
        f"whole-run time platform / plain = {result['total_time_ratio']:.2f}x   "
        f"(plain DataLoader: {result['loader_workers_per_rank']} worker(s) per rank)"
    )
    return "\n".join(lines)
