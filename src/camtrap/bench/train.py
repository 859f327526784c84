"""The train bench: steady-state images/s of ``run_training`` (Ray Train) vs a plain PyTorch DDP loop.

Both sides start from the platform's own plan (:func:`camtrap.train.driver.plan_training`: the same
rows, split, priors, normalisation and per-worker threads), so the only difference measured is the
orchestration. The plain baseline's training step deliberately mirrors the platform's
(:func:`camtrap.train.loop.train_loop_per_worker`): it is the code a user would write with torch
alone, and copying the step is what makes the comparison fair.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from camtrap import run_layout as layout
from camtrap.bench.ceiling import synthetic_ceiling
from camtrap.bench.common import (
    TARGETS,
    GpuSampler,
    check_device,
    format_gpu_use,
    median,
    ratio,
    require_ray_gpus,
)
from camtrap.bench.plain_ddp import run_plain_ddp
from camtrap.config.recipe import Recipe, StageConfig, load_recipe
from camtrap.errors import InputError
from camtrap.run_layout import RunLayout
from camtrap.train.driver import run_training
from camtrap.train.plan import TrainingPlan, plan_training


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
    ceiling = synthetic_ceiling(setup) if cuda else None  # after the sides: it holds the GPU alone
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
        lines += [format_gpu_use(side["name"], side["gpu"][-1]) for side in (b, p)]
    lines.append(
        f"  platform / plain DDP = {result['ratio']:.2f}x (target >= {result['targets']['ratio']})   "
        f"whole-run time platform / plain = {result['total_time_ratio']:.2f}x   "
        f"(plain DataLoader: {result['loader_workers_per_rank']} worker(s) per rank)"
    )
    return "\n".join(lines)
