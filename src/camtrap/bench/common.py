"""Benchmarks of the platform's jobs against the plain baseline a user would otherwise write.

Machines here are shared and noisy, so every figure is the median of several repetitions, and every
target is a ratio between the platform and its baseline measured in the same run on the same inputs.

* :func:`bench_prepare`: the Ray Data preparation job vs a single PIL loop and ``multiprocessing.Pool``;
* :func:`bench_train`: steady-state images/s of ``run_training`` (Ray Train) vs a plain PyTorch DDP loop;
* :func:`bench_predict`: images/s of ``scoring.predict`` (Ray Data) vs a plain single-process TTA loop,
  with the submissions checked equal;
* :func:`bench_memory`: peak RSS of the whole prepare and predict jobs on N and 10N images.

Each returns a JSON-ready dict (timings, ratios, targets) and has a ``format_*`` that prints it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
import psutil
import torch

from camtrap.config.recipe import Recipe, load_recipe
from camtrap.data import storage
from camtrap.data.classes import COMPETITION_CLASSES, FILE_NAME, SEQ_ID
from camtrap.data.contract import read_metadata
from camtrap.data.imageio import ImageDecodeError, decode_image, load_resized, resize_long_side
from camtrap.data.prepare import PrepareSettings, prepare_images, prepare_one
from camtrap.errors import InputError
from camtrap.metrics import class_priors
from camtrap.runtime import cpus_per_actor
from camtrap.train.dataset import TARGET, TrainingTable, load_training_table, split_validation
from camtrap.model_file import save_model_file
from camtrap.train.driver import recipe_classes, run_training, worker_resources
from camtrap.train.loop import create_optimizer, pad_batch, resolve_amp


@dataclass
class Timing:
    name: str
    seconds: list[float] = field(default_factory=list)
    items: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.items / self.median

    def as_dict(self) -> dict:
        return {"name": self.name, "items": self.items, "seconds": self.seconds, "median_s": self.median,
                "items_per_s": self.rate}


def _time(name: str, items: int, repeats: int, fn: Callable[[int], None]) -> Timing:
    t = Timing(name, items=items)
    for r in range(repeats):
        start = time.perf_counter()
        fn(r)
        t.seconds.append(time.perf_counter() - start)
    return t


def _same_tree(a: str, b: str, files: list[str]) -> list[str]:
    """Relative paths whose bytes differ between two output folders."""
    diff = []
    for rel in files:
        pa, pb = os.path.join(a, rel), os.path.join(b, rel)
        if not (os.path.exists(pa) and os.path.exists(pb)):
            diff.append(rel)
            continue
        with open(pa, "rb") as fa, open(pb, "rb") as fb:
            if fa.read() != fb.read():
                diff.append(rel)
    return diff


def bench_prepare(
    metadata: str, images_dir: str, repeats: int = 3, settings: PrepareSettings | None = None,
    workers: int | None = None, rows_per_task: int = 32,
) -> dict:
    """Ray Data preparation vs a single-process PIL loop vs ``multiprocessing.Pool(cpu_count)``.

    Every variant runs :func:`camtrap.prepare.prepare_one` on the same files, into its own folder,
    ``repeats`` times from scratch; the outputs must be byte-identical. Ray is started before timing
    (a cluster is long-lived; its start-up is reported separately by the caller).
    """
    settings = settings or PrepareSettings()
    files = list(read_metadata(metadata).frame["file_name"])
    workers = workers or os.cpu_count() or 1
    root = tempfile.mkdtemp(prefix="camtrap-bench-prepare-")
    outs = {k: os.path.join(root, k) for k in ("single", "pool", "ray")}

    def fresh(key: str) -> str:
        shutil.rmtree(outs[key], ignore_errors=True)
        return outs[key]

    def single(_: int) -> None:
        out = fresh("single")
        for f in files:
            prepare_one(f, images_dir, out, settings)

    def pool(_: int) -> None:
        out = fresh("pool")
        fn = partial(prepare_one, images_dir=images_dir, out_dir=out, settings=settings)
        p = mp.get_context("fork").Pool(workers)
        try:
            list(p.imap_unordered(fn, files, chunksize=8))
        finally:
            p.close()  # not terminate(): SIGTERM would trip the signal handlers forked from Ray
            p.join()

    def ray_job(_: int) -> None:
        prepare_images(metadata, images_dir, fresh("ray"), settings, overwrite=True, rows_per_task=rows_per_task)

    timings = [
        _time("single-process PIL loop", len(files), repeats, single),
        _time(f"multiprocessing.Pool({workers})", len(files), repeats, pool),
        _time("Ray Data prepare job", len(files), repeats, ray_job),
    ]
    mismatched = _same_tree(outs["single"], outs["ray"], files) + _same_tree(outs["single"], outs["pool"], files)
    shutil.rmtree(root, ignore_errors=True)
    single_t, pool_t, ray_t = timings
    return {
        "stage": "prepare",
        "images": len(files),
        "repeats": repeats,
        "timings": [t.as_dict() for t in timings],
        "ratio_vs_single": ray_t.rate / single_t.rate,
        "ratio_vs_pool": ray_t.rate / pool_t.rate,
        "pool_vs_single": pool_t.rate / single_t.rate,
        "targets": {"ratio_vs_single": 1.8, "ratio_vs_pool": 0.95},
        "outputs_identical": not mismatched,
        "mismatched_files": mismatched[:10],
    }


def format_prepare(result: dict) -> str:
    lines = [f"prepare: {result['images']} images, median of {result['repeats']} runs"]
    for t in result["timings"]:
        lines.append(f"  {t['name']:<28} {t['items_per_s']:7.1f} img/s  ({t['median_s']:.2f} s)")
    lines.append(
        f"  Ray / single = {result['ratio_vs_single']:.2f}x (target >= 1.8)   "
        f"Ray / Pool = {result['ratio_vs_pool']:.2f}x (target >= 0.95)   "
        f"Pool / single = {result['pool_vs_single']:.2f}x"
    )
    lines.append(f"  outputs identical: {result['outputs_identical']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Shared: device, machine, medians
# ---------------------------------------------------------------------------------------------------

#: What each bench aims for; printed beside every ratio and written to the results JSON.
TARGETS = {"train": 0.9, "predict": 0.9, "memory": 1.2}


def check_device(device: str) -> None:
    """Refuse ``cuda`` where torch cannot use a GPU: a CUDA bench would otherwise measure the CPU."""
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device: must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"--device cuda: CUDA is not available on this machine (torch {torch.__version__}, built for "
            f"CUDA {torch.version.cuda or 'none'}: torch.cuda.is_available() is False); "
            "run on a GPU machine or use --device cpu"
        )


def _require_ray_gpus(needed: int) -> None:
    """A Ray without enough GPUs would leave GPU actors pending forever: fail with the numbers instead."""
    import ray

    have = int(ray.cluster_resources().get("GPU", 0))
    if have < needed:
        raise InputError(f"--device cuda: this bench needs {needed} GPU(s) in Ray, the cluster has {have}")


def _identity(batch):
    return batch


def warm_up_ray() -> None:
    """One trivial Ray Data execution, not timed: it starts what a long-lived cluster already runs (Ray
    Data's system actors, a worker with Ray Data imported), so the first timed job does not pay for it."""
    import ray

    ray.data.range(8, override_num_blocks=2).map_batches(_identity).take_all()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict:
    """The ``machine`` block of the results: what the figures were measured on, and when."""
    import ray

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "ray_cpus": ray.cluster_resources().get("CPU") if ray.is_initialized() else None,
        "torch_threads_driver": torch.get_num_threads(),
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else _cpu_model(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "platform": platform.platform(),
    }
    info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    return info


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


@contextlib.contextmanager
def _torch_threads(threads: int):
    """Run the body with ``torch.set_num_threads(threads)``, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------
# train: Ray Train (run_training) vs a plain PyTorch DDP loop
# ---------------------------------------------------------------------------------------------------


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
    """Everything both sides of the train bench share: the same rows, model, stage, threads, device."""

    recipe: Recipe
    metadata: str
    labels: str
    images_dir: str
    train_rows: pd.DataFrame
    val_rows: pd.DataFrame
    classes: list[str]
    priors: list[float]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_workers: int
    device: str
    cpus_per_worker: float
    torch_threads: int
    loader_workers: int
    steps_per_epoch: int

    @property
    def stage(self):
        return self.recipe.stages[0]


def train_setup(
    metadata: str, labels: str, images_dir: str, recipe: Recipe, num_workers: int, device: str = "cpu",
    loader_workers: int | None = None,
) -> TrainSetup:
    """Resolve the rows, priors, normalisation and resources exactly as :func:`run_training` will."""
    import ray

    from camtrap.train.models import create_classifier, model_normalization

    table = load_training_table(metadata, labels, images_dir, recipe_classes(recipe))
    train_rows, val_rows = split_validation(table, recipe.validation)
    priors = class_priors(TrainingTable(train_rows, table.classes).sequence_targets()[1])
    probe = create_classifier(recipe.model, num_classes=len(table.classes), pretrained=None)
    mean, std = model_normalization(probe)
    use_gpu = device == "cuda"
    cpus, threads = worker_resources(num_workers, use_gpu)
    if loader_workers is None:
        # The CPUs the platform leaves to its Ray Data decode/augment tasks, split across the ranks; at
        # least one loader process per rank (0 would decode inside the training process, no overlap).
        free = ray.cluster_resources().get("CPU", os.cpu_count() or 1) - num_workers * cpus
        loader_workers = max(1, int(free // num_workers))
    steps = (len(train_rows) // num_workers) // recipe.stages[0].batch_size
    if steps < 1:
        raise InputError(f"train bench: {len(train_rows)} training images over {num_workers} workers is less than "
                         f"one batch of {recipe.stages[0].batch_size} per worker")
    return TrainSetup(recipe, metadata, labels, images_dir, train_rows, val_rows, list(table.classes),
                      priors.tolist(), mean, std, num_workers, device, cpus, threads, loader_workers, steps)


def steady_rate(epochs: list[dict]) -> tuple[float, int, float]:
    """(images/s, images, seconds) over every epoch but the first (start-up, first-touch costs)."""
    later = epochs[1:]
    images = sum(e["images_per_s"] * e["epoch_seconds"] for e in later)
    seconds = sum(e["epoch_seconds"] for e in later)
    return _ratio(images, seconds), round(images), seconds


def run_platform_training(setup: TrainSetup, out_dir: str) -> dict:
    """One run of the real code path, timed from the call to its return; per-epoch figures from
    ``RUN_DIR/metrics.csv`` (images/s = training images of the epoch / wall time of its loop)."""
    start = time.perf_counter()
    run_training(setup.recipe, setup.metadata, setup.labels, setup.images_dir, out_dir,
                 num_workers=setup.num_workers, use_gpu=setup.device == "cuda", overwrite=True)
    total = time.perf_counter() - start
    history = pd.read_csv(os.path.join(out_dir, "metrics.csv"))
    epochs = history[["epoch", "images_per_s", "epoch_seconds"]].to_dict("records")
    return {"total_s": total, "epochs": epochs}


class _ImageRows:
    """A map-style dataset: decode each file as :func:`camtrap.data.decode_transform_batch` does, then
    apply the stage's transform (uint8 HWC out; normalised on the device)."""

    def __init__(self, files: list[str], targets: list[np.ndarray], images_dir: str, transform):
        self.files, self.targets, self.images_dir, self.transform = files, targets, images_dir, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        img = decode_image(storage.read_bytes(storage.join(self.images_dir, self.files[i])))
        return self.transform(np.asarray(img)), self.targets[i]


class _PadCollate:
    """Collate uint8 images of possibly different sizes with :func:`camtrap.training.pad_batch`."""

    def __init__(self, fill: np.ndarray):
        self.fill = fill

    def __call__(self, items):
        return pad_batch([im for im, _ in items], self.fill), np.stack([t for _, t in items]).astype(np.float32)


def _list_collate(items):
    return [im for im, _ in items], np.stack([t for _, t in items]).astype(np.float32)


def _plain_ddp_worker(rank: int, cfg: dict) -> None:
    """One rank of the plain baseline: what a user would write with torch alone (DDP + DataLoader).

    The per-step work is the platform's: the same model, initial head bias, optimizer, LR schedule,
    AMP rule, loss, padding and on-device normalisation; what differs is the orchestration
    (``torch.multiprocessing`` + DataLoader workers instead of Ray Train + Ray Data). Per epoch, like
    the platform: train, validate this rank's slice, rank 0 checkpoints.
    """
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler

    from camtrap.train.augment import DeviceNormalizer, eval_transform, train_transform
    from camtrap.train.models import create_classifier, forward_by_shape, init_head_bias, train_mode
    from camtrap.train.schedule import build_scheduler

    recipe = Recipe.model_validate(cfg["recipe"])
    stage = recipe.stages[0]
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
        model.to(device)
        ddp = DistributedDataParallel(model, device_ids=[rank] if cuda else None)
        optimizer = create_optimizer([p for p in ddp.parameters() if p.requires_grad], recipe.optimizer, stage.lr)
        steps_per_epoch = cfg["steps_per_epoch"]
        scheduler = build_scheduler(optimizer, stage, steps_per_epoch)
        amp_dtype, use_scaler = resolve_amp(recipe.amp, device)
        scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

        def autocast():
            return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()

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
                            num_workers=workers, persistent_workers=workers > 0, collate_fn=_PadCollate(norm.fill))
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
                y = torch.from_numpy(targets).to(device)
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
                    p = torch.from_numpy(probs).double().clamp(1e-7, 1 - 1e-7)
                    val_loss += float(criterion(torch.log(p) - torch.log1p(-p), torch.from_numpy(targets).double())) * len(p)
                    val_n += len(p)
            totals = [None] * world
            dist.all_gather_object(totals, (seen, train_seconds, val_loss, val_n))
            seconds = max(t[1] for t in totals)
            epochs.append({"epoch": epoch + 1, "images_per_s": _ratio(sum(t[0] for t in totals), seconds),
                           "epoch_seconds": seconds})
            if rank == 0:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch},
                           os.path.join(cfg["out_dir"], "checkpoint.pt"))
        if rank == 0:
            with open(os.path.join(cfg["out_dir"], "epochs.json"), "w") as f:
                json.dump(epochs, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_plain_ddp(setup: TrainSetup, out_dir: str) -> dict:
    """One run of the baseline: ``torch.multiprocessing.spawn`` of the ranks, timed from the call to the
    ranks' exit (process start, imports and process group included, like the platform's total)."""
    import torch.multiprocessing as tmp

    os.makedirs(out_dir, exist_ok=True)
    cfg = {
        "recipe": setup.recipe.model_dump(mode="json"), "classes": setup.classes, "priors": setup.priors,
        "mean": list(setup.mean), "std": list(setup.std), "num_workers": setup.num_workers,
        "device": setup.device, "torch_threads": setup.torch_threads, "loader_workers": setup.loader_workers,
        "steps_per_epoch": setup.steps_per_epoch, "images_dir": setup.images_dir,
        "train_rows": setup.train_rows, "val_rows": setup.val_rows, "out_dir": out_dir,
    }
    saved = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT")}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    try:
        start = time.perf_counter()
        tmp.spawn(_plain_ddp_worker, args=(cfg,), nprocs=setup.num_workers, join=True)
        total = time.perf_counter() - start
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    with open(os.path.join(out_dir, "epochs.json")) as f:
        return {"total_s": total, "epochs": json.load(f)}


def _train_side(name: str, runs: list[dict]) -> dict:
    steady = [steady_rate(r["epochs"]) for r in runs]
    return {
        "name": name,
        "runs": runs,
        "steady_images_per_s": [s[0] for s in steady],
        "steady_images": [s[1] for s in steady],
        "steady_seconds": [s[2] for s in steady],
        "first_epoch_images_per_s": [r["epochs"][0]["images_per_s"] for r in runs],
        "total_s": [r["total_s"] for r in runs],
        "median_steady_images_per_s": _median([s[0] for s in steady]),
        "median_total_s": _median([r["total_s"] for r in runs]),
    }


def bench_train(
    metadata: str, labels: str, images_dir: str, repeats: int = 3, long_side: int = 96, epochs: int = 3,
    batch_size: int | None = None, num_workers: int | None = None, device: str = "cpu",
    loader_workers: int | None = None,
) -> dict:
    """Steady-state training images/s: the platform's TorchTrainer vs a plain PyTorch DDP loop.

    Both sides train the same one-stage recipe (:func:`bench_recipe`: ``cpu_tiny``'s first stage at
    ``long_side`` for ``epochs`` epochs) on the same training rows (the platform's own split), with the
    same per-worker batch, steps per epoch, torch threads per process and device. Figures:

    * steady images/s: training images of epochs 2.. / the wall time of those epochs' training loops,
      data loading included (what ``_epoch_metrics`` reports per epoch, measured the same way on both
      sides: from the start of the epoch's batch iteration to its last optimizer step, images summed
      over ranks, seconds of the slowest rank). The first epoch (start-up, first-touch allocations,
      loader start) is excluded on both sides and reported on its own;
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
        _require_ray_gpus(num_workers)
    recipe = bench_recipe(long_side, epochs, batch_size)
    if epochs < 2:
        raise InputError("train bench: needs at least 2 epochs (the first is excluded from the steady rate)")
    setup = train_setup(metadata, labels, images_dir, recipe, num_workers, device, loader_workers)
    root = tempfile.mkdtemp(prefix="camtrap-bench-train-")
    platform_runs, plain_runs = [], []
    try:
        for r in range(repeats):
            order = ("plain", "platform") if r % 2 == 0 else ("platform", "plain")
            for side in order:
                out = os.path.join(root, f"{side}{r}")
                if side == "plain":
                    plain_runs.append(run_plain_ddp(setup, out))
                else:
                    platform_runs.append(run_platform_training(setup, out))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    platform_side = _train_side("Ray Train TorchTrainer (run_training)", platform_runs)
    plain_side = _train_side(f"plain DDP ({num_workers} spawned processes)", plain_runs)
    stage = setup.stage
    return {
        "stage": "train",
        "device": device,
        "recipe": recipe.to_dict(),
        "model": recipe.model,
        "workers": num_workers,
        "cpus_per_worker": setup.cpus_per_worker,
        "torch_threads": setup.torch_threads,
        "loader_workers_per_rank": setup.loader_workers,
        "train_images": len(setup.train_rows),
        "val_images": len(setup.val_rows),
        "long_side": stage.long_side,
        "batch_size_per_worker": stage.batch_size,
        "steps_per_epoch": setup.steps_per_epoch,
        "epochs": stage.epochs,
        "repeats": repeats,
        "platform": platform_side,
        "baseline": plain_side,
        "ratio": _ratio(platform_side["median_steady_images_per_s"], plain_side["median_steady_images_per_s"]),
        "total_time_ratio": _ratio(platform_side["median_total_s"], plain_side["median_total_s"]),
        "targets": {"ratio": TARGETS["train"]},
    }


def format_train(result: dict) -> str:
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
            f"(epoch 1: {_median(side['first_epoch_images_per_s']):.1f} img/s; whole run {side['median_total_s']:.1f} s)"
        )
    lines.append(
        f"  platform / plain DDP = {result['ratio']:.2f}x (target >= {result['targets']['ratio']})   "
        f"whole-run time platform / plain = {result['total_time_ratio']:.2f}x   "
        f"(plain DataLoader: {result['loader_workers_per_rank']} worker(s) per rank)"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# predict: Ray Data scoring vs a plain single-process loop with the same TTA
# ---------------------------------------------------------------------------------------------------


def untrained_model_file(path: str, long_side: int, arch: str = "resnet10t", seed: int = 0) -> str:
    """A ``model.pt`` with random weights and priors, as ``train.py`` writes one: scoring costs the same."""
    from camtrap.train.augment import IMAGENET_MEAN, IMAGENET_STD
    from camtrap.train.models import create_classifier

    torch.manual_seed(seed)
    model = create_classifier(arch, num_classes=len(COMPETITION_CLASSES))
    priors = np.random.default_rng(seed).uniform(0.01, 0.3, len(COMPETITION_CLASSES))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_model_file(path, model.state_dict(), {"model": arch, "name": "bench"}, COMPETITION_CLASSES, priors,
                    long_side, IMAGENET_MEAN, IMAGENET_STD)
    return path


def plain_predict(model_path: str, frame: pd.DataFrame, images_dir: str, batch_size: int = 16,
                  device: str = "cpu") -> pd.DataFrame:
    """The baseline a user would write in one process, written apart from :mod:`camtrap.infer.predict`.

    Per batch of ``batch_size`` rows: decode with the preparation rule (long side 512, as
    ``frames.decode_batch``), resize to the model's inference long side (as ``FlipTTAPredictor``),
    normalise, forward the images of each size together with their horizontal flips, sigmoid. Then
    the geometric mean over a sequence's images x flips, clipped as the submission is. Returns one row
    per ``seq_id`` (metadata order; a sequence with no decodable image gets the priors), the model's
    class columns. Runs at fp32, as the platform's predictor does.
    """
    from camtrap.data.imageio import PREPARE_LONG_SIDE
    from camtrap.infer.predict import SUBMISSION_EPS

    state = torch.load(model_path, map_location="cpu", weights_only=True)
    classes = list(state["classes"])
    model = _model_from_state(state).to(device).eval()
    mean = torch.tensor(state["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(state["std"], device=device).view(1, 3, 1, 1)
    long_side = int(state["inference_long_side"])
    rows = list(zip(frame[FILE_NAME], frame[SEQ_ID]))
    seq_of_view, views = [], []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            by_size: dict[tuple, list] = {}
            for name, seq in rows[start:start + batch_size]:
                try:
                    img, _ = load_resized(storage.read_bytes(storage.join(images_dir, str(name))), PREPARE_LONG_SIDE)
                except (ImageDecodeError, OSError):
                    continue
                arr = np.asarray(resize_long_side(img, long_side))
                by_size.setdefault(arr.shape, []).append((seq, arr))
            for items in by_size.values():
                x = torch.from_numpy(np.stack([a for _, a in items])).to(device)
                x = (x.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
                p = torch.sigmoid(model(torch.cat([x, torch.flip(x, dims=(3,))]))).float().cpu().numpy()
                n = len(items)
                for k, (seq, _) in enumerate(items):
                    seq_of_view += [seq, seq]
                    views += [p[k], p[n + k]]
    logs = pd.DataFrame(np.log(np.maximum(np.asarray(views, dtype=np.float64).reshape(-1, len(classes)), 1e-15)),
                        columns=classes)
    gmean = np.exp(logs.groupby(pd.Index(seq_of_view, name=SEQ_ID), sort=False).mean())
    order = list(dict.fromkeys(frame[SEQ_ID]))
    sub = gmean.reindex(order)
    missing = sub.isna().any(axis=1)
    sub.loc[missing] = np.asarray(state["priors"], dtype=np.float64)
    return sub.clip(SUBMISSION_EPS, 1 - SUBMISSION_EPS).reset_index()


def _model_from_state(state: dict):
    from camtrap.train.models import create_classifier

    model = create_classifier(state["recipe"]["model"], num_classes=len(state["classes"]), pretrained=None)
    model.load_state_dict(state["model"])
    return model


def predictor_threads(use_gpu: bool) -> int:
    """Torch threads of the platform's one-model predictor actor (``scoring.score_images``)."""
    return max(1, int(cpus_per_actor(1, use_gpu)))


def bench_predict(
    metadata: str, images_dir: str, model_path: str | None = None, long_side: int = 128, repeats: int = 3,
    batch_size: int = 16, device: str = "cpu", rows_per_task: int = 64, scale: int = 4,
) -> dict:
    """Scoring images/s: :func:`camtrap.scoring.predict` vs :func:`plain_predict`, same model and images.

    Both are timed end to end from the call to the submission in memory (the platform's also writes
    its CSV and Parquet parts; the baseline writes its CSV too): model loading, decoding, resizing,
    forward + flip, aggregation. Ray is already running (a cluster is long-lived). The baseline runs
    with the torch threads of the platform's predictor actor; the platform also decodes in parallel
    Ray Data tasks, which is what it brings. Every platform run gets a fresh work dir, else it would
    resume and score nothing. The submissions must agree (max abs difference reported; < 1e-5 expected:
    only the batch an image ran in differs, which changes a convolution's last float32 bits).

    A job has a fixed start-up cost (the platform starts its actor and decode workers, each importing
    torch; both load the model) that a season of images amortises and a benchmark of a few hundred
    does not. So each side also runs on ``scale`` x N images (hard-linked copies): the *steady* rate
    is the extra images over the extra time, and the fixed cost what the N run spent beyond it.
    """
    from camtrap.infer.predict import predict

    check_device(device)
    use_gpu = device == "cuda"
    if use_gpu:
        _require_ray_gpus(1)
    n_images = len(read_metadata(metadata).frame)
    root = tempfile.mkdtemp(prefix="camtrap-bench-predict-")
    try:
        model_path = model_path or untrained_model_file(os.path.join(root, "model", "model.pt"), long_side)
        threads = predictor_threads(use_gpu)
        small, large = replicated_inputs(metadata, images_dir, root, n_images, max(scale, 2))
        inputs = {"N": small, "xN": large}
        copies_dir = os.path.join(root, "images")
        subs: dict[tuple[str, str], pd.DataFrame] = {}

        def platform_run(size: str, r: int) -> None:
            _, subs["platform", size] = predict(
                [model_path], inputs[size], copies_dir, os.path.join(root, f"sub_{size}_{r}.csv"),
                work_dir=os.path.join(root, f"work_{size}_{r}"), batch_size=batch_size, use_gpu=use_gpu,
                rows_per_task=rows_per_task)

        def plain_run(size: str, r: int) -> None:
            frame = read_metadata(inputs[size]).frame
            with _torch_threads(threads):
                subs["plain", size] = plain_predict(model_path, frame, copies_dir, batch_size, device)
            subs["plain", size].to_csv(os.path.join(root, f"plain_{size}_{r}.csv"), index=False, float_format="%.8g")

        n_large = n_images * max(scale, 2)
        timings = {(side, size): Timing(f"{label} ({size})", items=n_images if size == "N" else n_large)
                   for side, label in (("plain", "plain loop (1 process)"), ("platform", "Ray Data predict job"))
                   for size in ("N", "xN")}
        for r in range(repeats):
            order = [("plain", plain_run), ("platform", platform_run)]
            for size in ("N", "xN"):
                for side, fn in (order if r % 2 == 0 else order[::-1]):
                    start = time.perf_counter()
                    fn(size, r)
                    timings[side, size].seconds.append(time.perf_counter() - start)
        got = subs["platform", "N"].set_index(SEQ_ID)
        ref = subs["plain", "N"].set_index(SEQ_ID)
        same_rows = list(got.index) == list(ref.index)
        common = got.index.intersection(ref.index, sort=False)
        delta = got.loc[common].to_numpy(np.float64) - ref.loc[common, list(got.columns)].to_numpy(np.float64)
        diff = float(np.abs(delta).max()) if delta.size else float("nan")
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def steady(side: str) -> tuple[float, float]:
        extra = timings[side, "xN"].median - timings[side, "N"].median
        rate = (n_large - n_images) / extra if extra > 0 else float("nan")
        return rate, timings[side, "N"].median - n_images / rate

    (plain_rate, plain_fixed), (platform_rate, platform_fixed) = steady("plain"), steady("platform")
    return {
        "stage": "predict",
        "device": device,
        "images": n_images,
        "images_large": n_large,
        "sequences": len(got),
        "long_side": long_side,
        "batch_size": batch_size,
        "torch_threads": threads,
        "repeats": repeats,
        "timings": [t.as_dict() for t in timings.values()],
        "ratio": _ratio(timings["platform", "N"].rate, timings["plain", "N"].rate),
        "ratio_large": _ratio(timings["platform", "xN"].rate, timings["plain", "xN"].rate),
        "steady_images_per_s": {"plain": plain_rate, "platform": platform_rate},
        "fixed_seconds": {"plain": plain_fixed, "platform": platform_fixed},
        "ratio_steady": _ratio(platform_rate, plain_rate),
        "targets": {"ratio": TARGETS["predict"], "max_abs_diff": 1e-5},
        "same_sequences": same_rows,
        "max_abs_diff": diff,
    }


def format_predict(result: dict) -> str:
    lines = [(f"predict ({result['device']}): {result['images']} and {result['images_large']} images, "
              f"flip TTA at {result['long_side']} px, {result['torch_threads']} torch thread(s), "
              f"median of {result['repeats']} runs")]
    for t in result["timings"]:
        lines.append(f"  {t['name']:<34} {t['items_per_s']:7.1f} img/s  ({t['median_s']:.2f} s)")
    steady, fixed = result["steady_images_per_s"], result["fixed_seconds"]
    lines.append(f"  steady (extra images / extra time): plain {steady['plain']:.1f} img/s, Ray {steady['platform']:.1f} "
                 f"img/s; fixed start-up: plain {fixed['plain']:.1f} s, Ray {fixed['platform']:.1f} s")
    lines.append(f"  Ray / plain = {result['ratio']:.2f}x on {result['images']}, {result['ratio_large']:.2f}x on "
                 f"{result['images_large']}, {result['ratio_steady']:.2f}x steady (target >= {result['targets']['ratio']})")
    lines.append(f"  submissions: same sequences {result['same_sequences']}, max abs diff {result['max_abs_diff']:.2e} "
                 f"(must be < {result['targets']['max_abs_diff']:g})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# memory: peak RSS of the whole job on N and 10N images
# ---------------------------------------------------------------------------------------------------

#: Ray's own processes that take the ``ray::`` process title: agents and the system actors Ray Data
#: starts once and keeps (they serve every dataset of the session, not one job).
RAY_SYSTEM_PROCESSES = frozenset({"DashboardAgent", "RuntimeEnvAgent", "_StatsActor", "_AutoscalingCoordinatorActor"})




def _ray_title(cmdline: list[str]) -> str | None:
    """``MapBatches`` for ``ray::MapBatches(decode_batch)``, ``_StatsActor`` for ``ray::_StatsActor.method``."""
    if not cmdline or not cmdline[0].startswith("ray::"):
        return None
    return re.split(r"[.(\s]", cmdline[0][len("ray::"):], maxsplit=1)[0]


class JobMemorySampler:
    """Peak resident memory of a job: the driver plus every Ray worker process that runs its work.

    What is counted, and why it is fair:

    * the driver (this process): it plans the job, collects results and writes the outputs;
    * every Ray worker *started by this driver's Ray* (a descendant of this process: the Ray must be
      the one started in-process, as the bench script does) that works for the job: a worker started
      while the job runs (Ray starts workers on demand for the job's tasks and actors), or an idle
      worker that existed before and is seen running the job's work (its process title,
      ``ray::<task or actor>``, changed from ``ray::IDLE``). Once counted, a worker stays counted
      until the end of the job, also while idle between tasks, since it keeps its memory. A reused
      worker whose task starts and ends between two samples is missed; its memory was resident
      before the job anyway, and the tasks of a real job (a block of full-size images) last seconds.

    Not counted: Ray's own processes (GCS, raylet, dashboard, agents, the system actors Ray Data keeps
    for the whole session, pre-started idle workers) and what earlier jobs left behind (their idle
    workers, actors not yet reaped: a ``TrainController`` lingers after ``fit()``, for one). They
    exist whether or not the job runs and do not grow with it; their total is measured before and
    after the job and reported separately (``ray_own_mb_before``/``after``). Nor are other Rays on
    the machine (not descendants).

    RSS counts shared pages (libraries, the object store's shared memory) in every process that
    touches them, so the sum overstates the memory in use; ``private`` (RSS minus shared pages) is
    reported beside it. Sampled every ``interval`` seconds in a background thread between
    :meth:`start` and :meth:`stop`.
    """

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self._me = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camtrap-memory-sampler", daemon=True)
        self.job_processes: dict[int, str] = {}
        self.peak_mb = self.peak_private_mb = self.peak_driver_mb = self.peak_workers_mb = 0.0
        self.samples = 0
        self._before = {p.pid: t for p, t in self._ray_processes()}
        self.driver_baseline_mb = self._me.memory_info().rss / 2**20
        self.ray_own_mb_before = self.ray_own_mb()
        self.ray_own_mb_after = float("nan")

    def _ray_processes(self):
        """(process, title) of every ``ray::`` process under this driver."""
        for p in self._me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                title = _ray_title(p.cmdline())
                if title is not None:
                    yield p, title

    def ray_own_mb(self) -> float:
        """RSS of every process this driver's Ray runs (raylet, GCS, dashboard, agents, system actors,
        idle workers, leftovers of earlier jobs), less the job's workers."""
        total = 0
        for p in self._me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if p.pid not in self.job_processes:
                    total += p.memory_info().rss
        return total / 2**20

    def sample(self) -> None:
        mine = self._me.memory_info()
        rss, private, workers = mine.rss, mine.rss - mine.shared, 0
        for p, title in self._ray_processes():
            if title in RAY_SYSTEM_PROCESSES:
                self.job_processes.pop(p.pid, None)  # a new worker that became one of Ray's system actors
                continue
            if p.pid not in self._before or (title != "IDLE" and title != self._before[p.pid]):
                self.job_processes[p.pid] = title
            if p.pid in self.job_processes:
                with contextlib.suppress(psutil.Error):
                    m = p.memory_info()
                    rss, private, workers = rss + m.rss, private + m.rss - m.shared, workers + m.rss
        self.samples += 1
        if rss / 2**20 > self.peak_mb:
            self.peak_mb, self.peak_driver_mb, self.peak_workers_mb = rss / 2**20, mine.rss / 2**20, workers / 2**20
        self.peak_private_mb = max(self.peak_private_mb, private / 2**20)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
        self.ray_own_mb_after = self.ray_own_mb()

    def as_dict(self) -> dict:
        return {
            "driver_baseline_mb": self.driver_baseline_mb,
            "peak_rss_mb": self.peak_mb,
            "peak_driver_mb": self.peak_driver_mb,
            "peak_workers_mb": self.peak_workers_mb,
            "peak_private_mb": self.peak_private_mb,
            "job_processes": len(self.job_processes),
            "job_process_titles": sorted(set(self.job_processes.values())),
            "ray_processes_before": len(self._before),
            "ray_own_mb_before": self.ray_own_mb_before,
            "ray_own_mb_after": self.ray_own_mb_after,
            "samples": self.samples,
        }


def _require_local_ray() -> None:
    """The sampler finds the job's workers among this process's descendants: Ray must be started here."""
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if any("raylet" in part for part in p.cmdline()[:1]):
                return
    raise InputError("memory bench: needs a Ray started by this process (unset RAY_ADDRESS / --address): "
                     "it measures that Ray's worker processes, which a joined cluster's are not")


def replicated_inputs(metadata: str, images_dir: str, out_dir: str, images: int, copies: int) -> list[str]:
    """Metadata CSVs of ``images``, ``2 * images``, ... up to ``copies * images`` rows over the same files.

    The first ``images`` rows of ``metadata`` are hard-linked (copied where links fail) ``copies``
    times under ``out_dir/images/c<k>/`` with sequence ids ``c<k>_<seq_id>``, so the 10N run reads
    ten times the files without generating them; the N run is the first copy. Returns the paths of
    the N and the ``copies`` x N metadata files, and the images folder is ``out_dir/images``.
    """
    frame = read_metadata(metadata).frame[[SEQ_ID, FILE_NAME]].head(images)
    parts = []
    for k in range(copies):
        prefix = f"c{k}"
        for name in frame[FILE_NAME]:
            dst = os.path.join(out_dir, "images", prefix, name)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            src = os.path.join(images_dir, name)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        parts.append(frame.assign(**{SEQ_ID: prefix + "_" + frame[SEQ_ID].astype(str),
                                     FILE_NAME: prefix + "/" + frame[FILE_NAME].astype(str)}))
    paths = []
    for n, name in ((1, "metadata_n.csv"), (copies, "metadata_many.csv")):
        path = os.path.join(out_dir, name)
        pd.concat(parts[:n]).to_csv(path, index=False)
        paths.append(path)
    return paths


def bench_memory(
    metadata: str, images_dir: str, images: int = 64, factor: int = 10, long_side: int = 128,
    batch_size: int = 16, rows_per_task: int | None = None, interval: float = 0.1, warmup: bool = True,
) -> dict:
    """Peak RSS of the whole job (:class:`JobMemorySampler`) for prepare and predict on N and 10N images.

    Streaming means memory set by the blocks in flight, not by the number of images: the target is
    10N within 1.2x of N. The N images are the first ``images`` rows of ``metadata``, 10N is ten
    hard-linked copies of them (:func:`replicated_inputs`). With ``warmup``, one unrecorded run on N
    images first imports the libraries in the driver and the reused Ray workers, so both recorded runs
    start from the same state (else the N run alone would pay for first imports). ``rows_per_task``
    (images per Ray Data task) is each job's own default unless given. Ray must have been started by
    this process.
    """
    from camtrap.infer.predict import predict

    _require_local_ray()
    root = tempfile.mkdtemp(prefix="camtrap-bench-memory-")
    try:
        small, large = replicated_inputs(metadata, images_dir, root, images, factor)
        copies_dir = os.path.join(root, "images")
        model_path = untrained_model_file(os.path.join(root, "model", "model.pt"), long_side)
        n_images = len(read_metadata(small).frame)
        per_task = {} if rows_per_task is None else {"rows_per_task": rows_per_task}
        jobs: dict[str, Callable[[str, str], None]] = {
            "prepare": lambda md, out: prepare_images(md, copies_dir, out, overwrite=True, **per_task),
            "predict": lambda md, out: predict([model_path], md, copies_dir, os.path.join(out, "submission.csv"),
                                               work_dir=os.path.join(out, "work"), batch_size=batch_size, **per_task),
        }
        results = {}
        for stage, job in jobs.items():
            if warmup:
                job(small, os.path.join(root, f"{stage}-warmup"))
            runs = {}
            for label, md in (("n", small), ("many", large)):
                start = time.perf_counter()
                sampler = JobMemorySampler(interval)
                sampler.start()
                try:
                    job(md, os.path.join(root, f"{stage}-{label}"))
                finally:
                    sampler.stop()
                runs[label] = sampler.as_dict() | {"images": len(read_metadata(md).frame),
                                                   "seconds": time.perf_counter() - start}
                shutil.rmtree(os.path.join(root, f"{stage}-{label}"), ignore_errors=True)
            n, many = runs["n"], runs["many"]
            results[stage] = {
                "n": n,
                "many": many,
                "ratio": _ratio(many["peak_rss_mb"], n["peak_rss_mb"]),
                "growth_ratio": _ratio(many["peak_rss_mb"] - many["driver_baseline_mb"],
                                       n["peak_rss_mb"] - n["driver_baseline_mb"]),
            }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "stage": "memory",
        "images": n_images,
        "factor": factor,
        "rows_per_task": rows_per_task,
        "interval_s": interval,
        "warmup": warmup,
        **results,
        "targets": {"ratio": TARGETS["memory"]},
    }


def format_memory(result: dict) -> str:
    n, many = result["images"], result["images"] * result["factor"]
    lines = [f"memory: peak RSS of the job (driver + the Ray workers running it), {n} vs {many} images"]
    for stage in ("prepare", "predict"):
        r = result[stage]
        lines.append(
            f"  {stage:<8} {r['n']['peak_rss_mb']:7.0f} MB on {n}, {r['many']['peak_rss_mb']:7.0f} MB on {many} "
            f"-> {r['ratio']:.2f}x (target <= {result['targets']['ratio']})   above the driver's start: "
            f"{r['n']['peak_rss_mb'] - r['n']['driver_baseline_mb']:.0f} -> "
            f"{r['many']['peak_rss_mb'] - r['many']['driver_baseline_mb']:.0f} MB ({r['growth_ratio']:.2f}x)"
        )
    first = result["prepare"]["n"]
    lines.append(f"  not counted: Ray's own processes and earlier jobs' leftovers, {first['ray_own_mb_before']:.0f} MB "
                 f"before the first run (raylet, GCS, dashboard, agents, system actors, idle workers)")
    return "\n".join(lines)
