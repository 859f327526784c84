"""Warmup + cosine per step: the pure function and the LambdaLR built from a stage."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from camtrap.config.recipe import StageConfig
from camtrap.train.schedule import build_scheduler, stage_steps, warmup_cosine_lr

BASE, FLOOR = 0.005, 1e-5


def test_warmup_starts_near_zero_and_ends_at_base_lr() -> None:
    assert warmup_cosine_lr(0, 100, 10, BASE, FLOOR) == pytest.approx(BASE / 10)
    assert warmup_cosine_lr(4, 100, 10, BASE, FLOOR) == pytest.approx(BASE / 2)
    assert warmup_cosine_lr(9, 100, 10, BASE, FLOOR) == BASE  # last warmup step: exactly the peak


def test_cosine_middle_and_last_step() -> None:
    # Peak at step 9, last step 99: the middle of the decay is step 54.
    assert warmup_cosine_lr(54, 100, 10, BASE, FLOOR) == pytest.approx((BASE + FLOOR) / 2)
    assert warmup_cosine_lr(99, 100, 10, BASE, FLOOR) == pytest.approx(FLOOR, abs=1e-15)
    assert warmup_cosine_lr(500, 100, 10, BASE, FLOOR) == pytest.approx(FLOOR, abs=1e-15)  # past the end


def test_without_warmup() -> None:
    assert warmup_cosine_lr(0, 101, 0, BASE, 0.0) == BASE
    assert warmup_cosine_lr(50, 101, 0, BASE, 0.0) == pytest.approx(BASE / 2)
    assert warmup_cosine_lr(100, 101, 0, BASE, 0.0) == pytest.approx(0.0, abs=1e-15)
    assert warmup_cosine_lr(0, 1, 0, BASE, 0.0) == BASE  # a one-step stage trains at the peak


def test_monotonic_rise_then_decay() -> None:
    lrs = [warmup_cosine_lr(s, 200, 20, BASE, FLOOR) for s in range(200)]
    assert all(a < b for a, b in itertools.pairwise(lrs[:20]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[19:]))
    assert max(lrs) == BASE and min(lrs) == pytest.approx(FLOOR)


def test_warmup_over_the_whole_stage_ends_at_peak() -> None:
    assert warmup_cosine_lr(9, 10, 10, BASE, FLOOR) == BASE


@pytest.mark.parametrize(
    "args",
    [
        (0, 0, 0, BASE, 0.0),
        (0, 10, 11, BASE, 0.0),
        (-1, 10, 0, BASE, 0.0),
        (0, 10, 0, 0.0, 0.0),
        (0, 10, 0, BASE, 1.0),
    ],
)
def test_invalid_arguments(args) -> None:
    with pytest.raises(ValueError):
        warmup_cosine_lr(*args)


def _lrs(stage: StageConfig, steps_per_epoch: int) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=stage.lr, momentum=0.9)
    sched = build_scheduler(opt, stage, steps_per_epoch)
    out = []
    for _ in range(stage.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_build_scheduler_follows_the_function() -> None:
    stage = StageConfig(long_side=96, batch_size=4, epochs=3, lr=0.05, min_lr=0.001, warmup_epochs=0.5)
    total, warmup = stage_steps(stage, 7)
    assert (total, warmup) == (21, 4)  # 0.5 * 7 = 3.5 rounds to 4
    lrs = _lrs(stage, 7)
    expected = [warmup_cosine_lr(s, total, warmup, 0.05, 0.001) for s in range(total)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[warmup - 1] == pytest.approx(0.05) and lrs[-1] == pytest.approx(0.001)


def test_build_scheduler_resumes_mid_stage() -> None:
    stage = StageConfig(long_side=96, batch_size=4, epochs=2, lr=0.01, warmup_epochs=1)
    full = _lrs(stage, 5)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=stage.lr)
    build_scheduler(opt, stage, 5, last_step=6)
    assert opt.param_groups[0]["lr"] == pytest.approx(full[7])
    assert math.isclose(full[4], 0.01)


def test_the_curve_is_timms_cosine_one_step_earlier():
    """The reason we keep our own schedule (see camtrap.train.schedule): timm's per-step cosine with a
    warmup prefix is the same curve shifted one step later, starting at LR 0 and ending above min_lr."""
    from timm.scheduler import CosineLRScheduler

    total, warm, base, floor = 40, 7, 0.1, 0.001
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    timm_sched = CosineLRScheduler(opt, t_initial=total - warm, lr_min=floor, warmup_t=warm, warmup_lr_init=0.0,
                                   warmup_prefix=True, t_in_epochs=False)
    timm_lrs = []
    for step in range(total + 1):
        timm_sched.step_update(step)
        timm_lrs.append(opt.param_groups[0]["lr"])
    ours = [warmup_cosine_lr(step, total, warm, base, floor) for step in range(total)]
    assert timm_lrs[0] == 0.0 and ours[0] > 0
    assert ours == pytest.approx(timm_lrs[1:], rel=1e-9, abs=1e-12)
    assert ours[-1] == pytest.approx(floor) and timm_lrs[total - 1] > floor
