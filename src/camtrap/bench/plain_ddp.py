"""The train bench's baseline: what a user would write with torch alone (DDP + a DataLoader).

The per-step work is the platform's (the same model, initial head bias, optimizer, LR schedule, AMP rule,
loss, padding and on-device normalisation); what differs is the orchestration: ``torch.multiprocessing``
and DataLoader workers instead of Ray Train and Ray Data.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from camtrap import run_layout as layout
from camtrap.bench.common import ratio
from camtrap.config.recipe import Recipe, StageConfig
from camtrap.data import storage
from camtrap.data.classes import FILE_NAME
from camtrap.data.imageio import decode_image
from camtrap.metrics import logit
from camtrap.runtime import free_port
from camtrap.train.batches import pad_batch
from camtrap.train.dataset import TARGET
from camtrap.train.driver import stage_loop_config
from camtrap.train.loop import autocast_factory, create_optimizer, gather, resolve_amp

if TYPE_CHECKING:
    from camtrap.bench.train import TrainSetup

#: What each baseline rank 0 writes: its per-epoch figures, read back by the driver.
PLAIN_EPOCHS_FILE = "epochs.json"


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
