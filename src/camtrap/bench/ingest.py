"""The ingest bench: the training input pipeline alone, with no model work, against a torch DataLoader.

Where training time goes before any GPU is involved. Both sides decode the same prepared images with
the same per-image transform (the stage's :class:`camtrap.train.augment.TrainTransform`) on the same
number of CPUs, and hand batches of uint8 images to a consumer that only counts them (and, on
``--device cuda``, copies them to the GPU and waits for the copy):

* **platform**: :func:`camtrap.train.epochs.epoch_dataset` + :func:`camtrap.train.loop.train_batches`,
  exactly what a training worker iterates, consumed in a Ray actor that reserves no CPU (it does no
  model work), so its decode tasks get every CPU the DataLoader gets;
* **plain**: a ``torch.utils.data.DataLoader`` with one worker process per CPU, shuffled, the same
  batch size, pinned memory on CUDA.

Ray Data's own instruments say where the consumer's time went: the iterator's per-stage blocked time
(waiting for production, ``ray.get``, batching, format, collate, finalize = host to device), and the
decode tasks' wall and CPU time. A rate near the DataLoader's with most of the blocked time in
"production wait" means the decode CPUs are the limit, as they should be.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from camtrap.bench.common import GpuSampler, check_device, format_gpu_use, median, ratio
from camtrap.data.classes import FILE_NAME
from camtrap.errors import InputError
from camtrap.train.augment import DeviceNormalizer, train_transform
from camtrap.train.dataset import TARGET
from camtrap.train.plan import plan_training

#: Ray Data's names of the iterator's blocked-time stages, and ours in the results.
_BLOCKED = {
    "blocked_production_wait_time": "production wait",
    "blocked_data_transfer_time": "ray.get",
    "blocked_batching_time": "batching",
    "blocked_format_time": "format",
    "blocked_collate_time": "collate",
    "blocked_finalize_time": "host to device",
}


def iterator_breakdown(dataset) -> dict[str, float]:
    """Seconds the consumer's thread was blocked in each stage of Ray Data's iterator, and in all.

    Read from the dataset's stats after iterating it (Ray 2.60's ``IterStatsSummary``); empty when
    this Ray version does not record them.
    """
    try:
        summary = dataset._get_stats_summary().iter_stats
    except AttributeError:
        return {}
    out = {name: float(getattr(summary, attr).get()) for attr, name in _BLOCKED.items() if hasattr(summary, attr)}
    for attr, name in (("block_time", "blocked in all"), ("initialize_time", "iterator start")):
        if hasattr(summary, attr):
            out[name] = float(getattr(summary, attr).get())
    return out


def decode_task_times(dataset) -> dict[str, float]:
    """Wall and CPU seconds of the dataset's decode tasks, summed (from its operator stats)."""
    try:
        ops = dataset._get_stats_summary().operators_stats
    except AttributeError:
        return {}
    wall = sum(op.wall_time.sum for op in ops if getattr(op, "wall_time", None))
    cpu = sum(op.cpu_time.sum for op in ops if getattr(op, "cpu_time", None))
    tasks = sum(op.wall_time.count for op in ops if getattr(op, "wall_time", None))
    return {"task_wall_s": float(wall), "task_cpu_s": float(cpu), "tasks": int(tasks)}


def _finish(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def platform_epochs(table_ref, rows: int, images_dir: str, transform, seed: int, epochs: int, batch_size: int,
                    decode: str, cpus: float, device: str, fill: np.ndarray) -> list[dict[str, Any]]:
    """The platform's side, run where a training worker would run and as it runs a stage: one dataset over
    the epochs (:func:`camtrap.train.epochs.stage_indices`), its batches from
    :func:`camtrap.train.loop.train_batches`, ``rows // batch_size`` steps an epoch, counted (on the device)."""
    import itertools

    from camtrap.train.batches import train_batches
    from camtrap.train.epochs import epoch_dataset, stage_indices

    dev = torch.device(device)
    steps = rows // batch_size
    indices, epoch_of = stage_indices(rows, seed, list(range(epochs)), 0, 1, steps * batch_size)
    start = time.perf_counter()
    ds = epoch_dataset(table_ref, images_dir, transform, indices, seed, epoch_of, max_cpus=cpus, decode=decode)
    batches = iter(train_batches(ds, batch_size, dev, fill))
    records = []
    for epoch in range(epochs):
        images, first = 0, None
        for batch in itertools.islice(batches, steps):
            images += len(batch[TARGET])
            first = first or time.perf_counter() - start
        _finish(dev)
        seconds = time.perf_counter() - start
        records.append({"epoch": epoch + 1, "images": images, "seconds": seconds, "images_per_s": ratio(images, seconds),
                        "first_batch_s": first})
        start = time.perf_counter()
    for _ in batches:
        pass
    records[-1].update(blocked_s=iterator_breakdown(ds), decode=decode_task_times(ds))
    return records


class _Rows(torch.utils.data.Dataset):
    """The plain side's dataset: what a user writes (decode, then the stage's transform)."""

    def __init__(self, files: list[str], images_dir: str, transform):
        self.files, self.images_dir, self.transform = files, images_dir, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from camtrap.data import storage
        from camtrap.data.imageio import decode_image

        img = decode_image(storage.read_bytes(storage.join(self.images_dir, self.files[i])))
        return self.transform(np.asarray(img)), np.zeros(1, np.float32)


def plain_epochs(files: list[str], images_dir: str, transform, seed: int, epochs: int, batch_size: int,
                 workers: int, device: str, fill: np.ndarray) -> list[dict[str, Any]]:
    """The DataLoader side: ``workers`` processes, shuffled, pinned on CUDA, consumed here."""
    from camtrap.bench.plain_ddp import ListPadCollate

    dev = torch.device(device)
    loader = torch.utils.data.DataLoader(
        _Rows(files, images_dir, transform), batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=workers, persistent_workers=workers > 0, pin_memory=dev.type == "cuda",
        collate_fn=ListPadCollate(fill), generator=torch.Generator().manual_seed(seed),
        # Not fork: a child forked from a process that runs a Ray driver inherits its gRPC threads' state,
        # and the driver's next task submission hung.
        multiprocessing_context="spawn" if workers > 0 else None)
    records = []
    for epoch in range(epochs):
        start = time.perf_counter()
        images, first = 0, None
        for x, _ in loader:
            x.to(dev, non_blocking=True)
            images += len(x)
            first = first or time.perf_counter() - start
        _finish(dev)
        seconds = time.perf_counter() - start
        records.append({"epoch": epoch + 1, "images": images, "seconds": seconds, "images_per_s": ratio(images, seconds),
                        "first_batch_s": first})
    del loader
    return records


def _steady(records: list[dict[str, Any]]) -> float:
    """Images/s over every epoch but the first (worker start, first imports)."""
    later = records[1:]
    return ratio(sum(r["images"] for r in later), sum(r["seconds"] for r in later))


def bench_ingest(metadata: str, labels: str, images_dir: str, long_side: int = 96, batch_size: int = 32,
                 epochs: int = 3, repeats: int = 2, copies: int = 4, cpus: int | None = None,
                 device: str = "cpu") -> dict[str, Any]:
    """Steady images/s of the training input pipeline with no model work: platform vs DataLoader.

    ``copies``: the training rows repeated (the same files), so an epoch is long enough to measure on
    a small demo season. ``cpus``: decode CPUs of both sides (default: every CPU of the Ray cluster).
    Runs alternate (plain first on even repeats) so a drift in the machine's load hits both alike.
    """
    import ray

    from camtrap.bench.train import bench_recipe
    from camtrap.train.epochs import EpochTable

    check_device(device)
    if epochs < 2:
        raise InputError("ingest bench: needs at least 2 epochs (the first is excluded from the steady rate)")
    recipe = bench_recipe(long_side, epochs, batch_size)
    plan = plan_training(recipe, metadata, labels, images_dir, 1, use_gpu=device == "cuda")
    rows = pd.concat([plan.train_rows] * max(1, copies), ignore_index=True)
    stage = recipe.stages[0]
    transform = train_transform(stage.long_side, stage.crop_ratio, mean=None, std=None)
    fill = DeviceNormalizer(plan.mean, plan.std).fill
    cpus = int(cpus or ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    table_ref = ray.put(EpochTable.from_frame(rows, plan.classes))
    consumer = ray.remote(platform_epochs).options(num_cpus=0, num_gpus=1 if device == "cuda" else 0)
    platform_runs, plain_runs = [], []
    gpu = {"platform": [], "plain": []}
    for r in range(repeats):
        for side in (("plain", "platform") if r % 2 == 0 else ("platform", "plain")):
            with GpuSampler() as sampler:
                if side == "plain":
                    plain_runs.append(plain_epochs(list(rows[FILE_NAME]), plan.images_dir, transform, recipe.seed,
                                                   epochs, stage.batch_size, cpus, device, fill))
                else:
                    platform_runs.append(ray.get(consumer.remote(
                        table_ref, len(rows), plan.images_dir, transform, recipe.seed, epochs, stage.batch_size,
                        plan.decode.read, float(cpus), device, fill)))
            gpu[side].append(sampler.summary())
    platform_rate = median([_steady(r) for r in platform_runs])
    plain_rate = median([_steady(r) for r in plain_runs])
    last = platform_runs[-1][-1]
    return {
        "stage": "ingest", "device": device, "cpus": cpus, "rows_per_epoch": len(rows), "long_side": stage.long_side,
        "batch_size": stage.batch_size, "epochs": epochs, "repeats": repeats,
        "platform": {"runs": platform_runs, "median_steady_images_per_s": platform_rate, "gpu": gpu["platform"]},
        "plain": {"runs": plain_runs, "median_steady_images_per_s": plain_rate, "gpu": gpu["plain"]},
        "blocked_s": last["blocked_s"], "decode": last["decode"],
        "seconds": sum(r["seconds"] for r in platform_runs[-1]),
        "ratio": ratio(platform_rate, plain_rate), "targets": {"ratio": 0.95},
    }


def format_ingest(result: dict[str, Any]) -> str:
    """The console summary of :func:`bench_ingest`."""
    blocked = result["blocked_s"]
    dec = result["decode"]
    lines = [
        (f"ingest ({result['device']}): the training input pipeline with no model, {result['rows_per_epoch']} images an "
         f"epoch at {result['long_side']} px, batch {result['batch_size']}, {result['cpus']} decode CPUs on each side, "
         f"median of {result['repeats']} runs, epochs 2..{result['epochs']}"),
        f"  plain DataLoader ({result['cpus']} workers)        {result['plain']['median_steady_images_per_s']:8.1f} img/s",
        f"  platform (epoch_dataset + train_batches) {result['platform']['median_steady_images_per_s']:8.1f} img/s",
        f"  platform / plain = {result['ratio']:.2f}x (target >= {result['targets']['ratio']})",
    ]
    if result["device"] == "cuda":
        lines += [format_gpu_use(name, result[name]["gpu"][-1]) for name in ("plain", "platform")]
    if blocked:
        parts = ", ".join(f"{k} {v:.2f}s" for k, v in blocked.items() if k not in ("blocked in all", "iterator start"))
        lines.append(f"  last platform run ({result['seconds']:.1f}s, all epochs): consumer blocked "
                     f"{blocked.get('blocked in all', float('nan')):.2f}s ({parts}); iterator start "
                     f"{blocked.get('iterator start', float('nan')):.2f}s")
    if dec:
        lines.append(f"  its decode tasks: {dec['tasks']} tasks, {dec['task_wall_s']:.1f}s wall, {dec['task_cpu_s']:.1f}s CPU "
                     f"({ratio(dec['task_cpu_s'], result['seconds']):.2f} CPUs busy of {result['cpus']})")
    return "\n".join(lines)
