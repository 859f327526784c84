"""Per-step learning rate: linear warmup, then cosine decay to a floor at the stage's last step.

The 2nd-place code stepped its schedule every optimizer step, not every epoch: with tens of thousands
of steps per epoch on the full data an epoch-wise schedule would be a staircase. The shape:

* warmup (``warmup_steps > 0``): ``base_lr * (step + 1) / warmup_steps``, so the first step already moves
  (a zero LR would waste it) and the last warmup step, ``warmup_steps - 1``, is exactly ``base_lr``;
* then cosine from ``base_lr`` at the peak step to ``min_lr`` at step ``total_steps - 1``.

The peak step is ``warmup_steps - 1`` (or 0 without warmup), so the curve is continuous: no step is
spent twice at ``base_lr``.

Why not timm's ``CosineLRScheduler(t_in_epochs=False, warmup_prefix=True)``: it draws the same curve one
step later (``tests/test_schedule.py`` pins that relation). Its step 0 runs at ``warmup_lr_init`` (0 by
default: a step that moves nothing), and its last step stops one step short of ``min_lr``, so a stage
would not end on the recipe's floor. A ``LambdaLR`` also checkpoints as a plain step counter with the
optimizer, which is what resume restores.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from camtrap.config.recipe import StageConfig


def warmup_cosine_lr(
    step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0
) -> float:
    """LR at optimizer step ``step`` (0-based) of a stage of ``total_steps`` steps.

    Steps past the end stay at ``min_lr``. A stage whose warmup covers every step ends at ``base_lr``; a
    one-step stage without warmup runs at ``base_lr``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if not base_lr > 0:
        raise ValueError(f"base_lr must be > 0, got {base_lr}")
    if not 0 <= min_lr <= base_lr:
        raise ValueError(f"min_lr must be in [0, base_lr={base_lr}], got {min_lr}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    peak = max(warmup_steps - 1, 0)
    decay_steps = total_steps - 1 - peak
    if decay_steps <= 0:
        return base_lr
    progress = min((step - peak) / decay_steps, 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def stage_steps(stage: StageConfig, steps_per_epoch: int) -> tuple[int, int]:
    """(total_steps, warmup_steps) of a stage; fractional warmup epochs are rounded to whole steps."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    total = stage.epochs * steps_per_epoch
    warmup = min(round(stage.warmup_epochs * steps_per_epoch), total)
    return total, warmup


def build_scheduler(
    optimizer: torch.optim.Optimizer, stage: StageConfig, steps_per_epoch: int, last_step: int = -1
) -> LambdaLR:
    """A ``LambdaLR`` that follows :func:`warmup_cosine_lr` for ``stage``; call ``.step()`` after every
    optimizer step.

    Build the optimizer with ``lr=stage.lr``: the lambda is a multiplier of each param group's initial LR
    (so groups with their own LR keep their ratio to it). Constructing the scheduler already sets step 0's
    LR. ``last_step`` resumes mid-stage (the index of the last step taken).
    """
    total, warmup = stage_steps(stage, steps_per_epoch)
    base, floor = stage.lr, stage.min_lr

    def factor(step: int) -> float:
        return warmup_cosine_lr(step, total, warmup, base, floor) / base

    if last_step >= 0:
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
    return LambdaLR(optimizer, lr_lambda=factor, last_epoch=last_step)
