"""The device's training ceiling: the platform's own step on a batch already on the device.

What the train bench's platform and plain sides are measured against on a GPU: with no input pipeline at
all, this is as fast as the stage can train on this device.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from camtrap.bench.common import ratio
from camtrap.train.dataset import TARGET
from camtrap.train.loop import autocast_factory, create_optimizer, resolve_amp

if TYPE_CHECKING:
    from camtrap.bench.train import TrainSetup


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
