"""The timm model factory: where weights come from, what is frozen, how frozen layers stay frozen.

* ``pretrained``: ``None``/``"none"`` random init; ``"timm"`` the model's default pretrained tag; a timm
  tag (``"resnext50_32x4d.fb_swsl_ig1b_ft_in1k"`` or a bare ``"fb_swsl_ig1b_ft_in1k"``), downloaded by timm;
  or a local ``.pth/.pt/.bin/.safetensors`` file (a checkpoint of a previous stage, weights copied to a
  cluster without internet). Classification via :func:`camtrap.config.recipe.pretrained_kind`.
* ``freeze``: ``"stem"`` (the 2nd-place write-up: first conv and BN) or ``"stem+layer1"`` (what its code
  did). The groups come from timm's ``model.group_matcher()`` so any timm model with one works, not
  only ResNets.
* Freezing a BatchNorm means its affine parameters *and* its running statistics: ``model.train()``
  would otherwise keep updating ``running_mean/var``. :func:`train_mode` is the call to use instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import timm
import torch
from timm.models import load_state_dict as timm_load_state_dict
from timm.models import split_model_name_tag
from timm.models._manipulate import group_with_matcher
from torch import nn

from camtrap.config.recipe import pretrained_kind, pretrained_tag_name
from camtrap.data.classes import EMPTY
from camtrap.errors import InputError
from camtrap.metrics import PRIOR_FLOOR
from camtrap.model_file import read_model_file
from camtrap.train.augment import IMAGENET_MEAN, IMAGENET_STD

_logger = logging.getLogger(__name__)

Freeze = Literal["none", "stem", "stem+layer1"]

#: How many leading parameter groups of ``group_matcher(coarse=True)`` each freeze setting covers.
_FROZEN_GROUPS: dict[str, int] = {"none": 0, "stem": 1, "stem+layer1": 2}


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DDP / DataParallel / ``torch.compile`` wrappers (``.module``, ``._orig_mod``)."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def create_classifier(
    model_name: str,
    num_classes: int,
    pretrained: str | None = None,
    freeze: Freeze = "none",
) -> nn.Module:
    """A timm classifier with ``num_classes`` outputs, weights from ``pretrained``, layers frozen per ``freeze``."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if freeze not in _FROZEN_GROUPS:
        raise ValueError(f"freeze must be one of {sorted(_FROZEN_GROUPS)}, got {freeze!r}")
    kind = pretrained_kind(pretrained)
    if kind == "none":
        model = timm.create_model(model_name, pretrained=False, num_classes=num_classes)
    elif kind == "timm":
        model = timm.create_model(model_name, pretrained=True, num_classes=num_classes)
    elif kind == "tag":
        full = pretrained_tag_name(model_name, pretrained)
        arch, want = split_model_name_tag(full)[0], split_model_name_tag(model_name)[0]
        if arch != want:
            raise ValueError(f"pretrained tag '{pretrained}' is for '{arch}', not for model '{model_name}'")
        # timm drops the pretrained 1000-class head when num_classes differs and initialises a new one.
        model = timm.create_model(full, pretrained=True, num_classes=num_classes)
    else:
        model = timm.create_model(model_name, pretrained=False, num_classes=num_classes)
        load_weights_file(model, pretrained)
    if freeze != "none":
        freeze_layers(model, freeze)
    return model


def init_head_bias(model: nn.Module, priors: Sequence[float]) -> bool:
    """Set the classifier's bias to the log-odds of the class priors; returns whether it could.

    A fresh 54-way sigmoid head starts near p = 0.5 for every class, a loss of about 0.69 when the
    class-prior baseline is about 0.03 on camera-trap data: the first epochs are spent only learning
    that most classes are rare. Starting from ``logit(prior)`` puts step 0 at the prior baseline.
    """
    head = unwrap_model(model).get_classifier()
    if not isinstance(head, nn.Linear) or head.bias is None or head.bias.numel() != len(priors):
        return False
    p = torch.as_tensor(list(priors), dtype=torch.float64).clamp(PRIOR_FLOOR, 1 - PRIOR_FLOOR)
    with torch.no_grad():
        head.bias.copy_(torch.log(p) - torch.log1p(-p))
    return True


def _classifier_prefixes(model: nn.Module) -> list[str]:
    """Module names of the classification head (``fc`` for ResNets), from the pretrained cfg or the model."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier")
    if names:
        return [names] if isinstance(names, str) else list(names)
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        head = get_classifier()
        return [name for name, module in model.named_modules() if module is head and name]
    return []


def load_weights_file(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a local weights file into ``model``, in place, safely.

    Why not timm's ``pretrained_cfg_overlay=dict(file=...)``: it decides whether to drop the head by
    comparing ``num_classes`` with the *pretrained cfg's* class count (1000), not with the file's. A
    54-class checkpoint reloaded into a 54-class model loses its trained head (checked with timm 1.0.31),
    and a 1000-class model cannot load a file with another head. Here the head is dropped exactly when
    its shape differs from the model's.

    Reading goes through timm's ``load_state_dict`` (``torch.load(weights_only=True)``, so a file cannot
    run code; safetensors; ``state_dict``/``model`` wrapper keys and DDP ``module.`` prefixes handled).
    Any other missing, unexpected or mis-shaped key is an error naming the keys: a wrong architecture
    must not load half-way.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    try:
        state = timm_load_state_dict(str(path), use_ema=True, device="cpu", weights_only=True)
    except RuntimeError as e:  # timm's wording for a pickle that weights_only refuses
        raise InputError(f"{path}: not loadable as plain weights: {e}") from e
    target = unwrap_model(model)
    own = target.state_dict()
    heads = tuple(f"{p}." for p in _classifier_prefixes(target))
    dropped = []
    mismatched = []
    for key, value in list(state.items()):
        if key in own and hasattr(value, "shape") and tuple(value.shape) != tuple(own[key].shape):
            if key.startswith(heads):
                dropped.append(key)
                del state[key]
            else:
                mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}")
    # BN step counters are absent from pre-2018 checkpoints and unused with a momentum set: not an error.
    missing = [
        k for k in own if k not in state and k not in dropped and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in state if k not in own]
    problems = []
    if mismatched:
        problems.append(f"shape mismatch: {', '.join(mismatched[:5])}")
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(
            f"unexpected keys: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}"
        )
    if problems:
        raise InputError(f"{path}: weights do not fit {type(target).__name__}: " + "; ".join(problems))
    target.load_state_dict(state, strict=False)
    if dropped:
        _logger.info("%s: classifier %s has another shape; kept the new random head", path, dropped)
    return model


def _group_ids(model: nn.Module, names: Iterator[str]) -> dict[str, int]:
    """Map names to timm's coarse parameter-group index: 0 = stem, 1 = first block group (layer1), ..."""
    matcher_fn = getattr(model, "group_matcher", None)
    if not callable(matcher_fn):
        raise TypeError(
            f"{type(model).__name__} has no timm group_matcher(); cannot find its stem and layers"
        )
    matcher = matcher_fn(coarse=True)
    if not isinstance(matcher, dict) or list(matcher)[:2] != ["stem", "blocks"]:
        raise InputError(
            f"{type(model).__name__}.group_matcher() does not start with 'stem' then 'blocks' groups: {matcher!r}"
        )
    return group_with_matcher(((n, None) for n in names), matcher, reverse=True)


def freeze_layers(model: nn.Module, freeze: Freeze) -> list[str]:
    """Set ``requires_grad=False`` on the stem (and layer1); returns the frozen parameter names.

    Groups come from timm's coarse ``group_matcher()``: group 0 is ``stem`` (conv1 + bn1 on a ResNet, the
    deep stem's convs and BNs on ``resnet*d/t``), group 1 the first ``blocks`` group (``layer1``).
    """
    if freeze not in _FROZEN_GROUPS:
        raise ValueError(f"freeze must be one of {sorted(_FROZEN_GROUPS)}, got {freeze!r}")
    target = unwrap_model(model)
    n_groups = _FROZEN_GROUPS[freeze]
    params = dict(target.named_parameters())
    groups = _group_ids(target, iter(params))
    frozen = [name for name in params if groups[name] < n_groups]
    if n_groups and not frozen:
        raise ValueError(f"freeze={freeze!r} matched no parameter of {type(target).__name__}")
    for name in frozen:
        params[name].requires_grad_(False)
    return frozen


def frozen_parameter_names(model: nn.Module) -> list[str]:
    """Names of parameters with ``requires_grad=False`` (what was frozen)."""
    return [name for name, p in unwrap_model(model).named_parameters() if not p.requires_grad]


def frozen_batchnorms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """BatchNorm modules whose affine parameters are all frozen: their running stats must not move either."""
    out = []
    for name, module in unwrap_model(model).named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                out.append((name, module))
    return out


def train_mode(model: nn.Module) -> nn.Module:
    """``model.train()``, then frozen BatchNorms back to eval so their running statistics stay put.

    Call this instead of ``model.train()`` at the start of every training epoch (validation puts the
    whole model in eval). Works on a DDP-wrapped model.
    """
    model.train()
    for _, module in frozen_batchnorms(model):
        module.eval()
    return model


def model_normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the model's pretrained weights expect, from timm's pretrained cfg; ImageNet's if absent."""
    cfg = getattr(unwrap_model(model), "pretrained_cfg", None) or {}
    mean = tuple(float(v) for v in cfg.get("mean") or IMAGENET_MEAN)
    std = tuple(float(v) for v in cfg.get("std") or IMAGENET_STD)
    return mean, std


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, for run summaries."""
    params = list(unwrap_model(model).parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


__all__ = [
    "count_parameters",
    "create_classifier",
    "freeze_layers",
    "frozen_batchnorms",
    "frozen_parameter_names",
    "load_weights_file",
    "model_normalization",
    "train_mode",
    "unwrap_model",
]


def forward_by_shape(model: nn.Module, images: Sequence, norm, flip: bool = False, autocast=None):
    """Sigmoid probabilities ``(n, views, classes)`` for uint8 HWC images of possibly different sizes.

    Images of equal size are forwarded together, so no prediction sees padding or depends on what
    else is in the batch; ``flip`` adds the horizontal flip as a second view (the seed's TTA).
    ``norm`` is an :class:`camtrap.train.augment.DeviceNormalizer`; ``autocast`` a context-manager factory.
    """
    import contextlib

    import numpy as np

    autocast = autocast or contextlib.nullcontext
    views = 2 if flip else 1
    out = None
    stacked = isinstance(images, np.ndarray) and images.ndim == 4  # one size, already one array: no copy
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape), []).append(i)
    with torch.no_grad():
        for idx in groups.values():
            x = norm(images if stacked else np.stack([images[i] for i in idx]))
            if flip:
                x = torch.cat([x, torch.flip(x, dims=(3,))])
            with autocast():
                logits = model(x)
            p = torch.sigmoid(logits.float()).cpu().numpy()  # probabilities in float32, whatever the forward's dtype
            if out is None:
                out = np.empty((len(images), views, p.shape[1]), dtype=np.float32)
            n = len(idx)
            for v in range(views):
                out[idx, v] = p[v * n : (v + 1) * n]
    return out if out is not None else np.empty((0, views, 0), np.float32)


def load_trained(path: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a trained classifier from ``model.pt``, in eval mode on ``device``; returns (model, metadata).

    The metadata is everything in the file but the weights (classes, priors, inference long side,
    normalisation, recipe) plus ``empty_index``, the column of the ``empty`` class or None.
    """
    state = read_model_file(path)
    model = create_classifier(state["recipe"]["model"], num_classes=len(state["classes"]), pretrained=None)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    meta = {k: v for k, v in state.items() if k != "model"}
    meta["empty_index"] = state["classes"].index(EMPTY) if EMPTY in state["classes"] else None
    return model, meta


def in_batch_layout(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with channels_last parameters, the layout of the batches it trains on; call before DDP.

    Batches arrive NHWC and :class:`camtrap.train.augment.DeviceNormalizer` permutes them without a copy,
    which is channels_last, so convolutions produce channels_last weight gradients. DDP lays its gradient
    buckets out like the parameters when it wraps the model: contiguous parameters gave buckets of the
    other layout ("Grad strides do not match bucket view strides") and a gradient copy every step.
    Channels_last is also the fast layout for convolutions under CUDA AMP; on CPU the train bench showed
    no difference beyond its noise (platform 78.3 vs 83.6 img/s before, plain DDP 108.7 vs 117.4: the
    same 0.72x vs 0.71x ratio).
    """
    return model.to(memory_format=torch.channels_last)
