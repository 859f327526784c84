"""Model files the tests write themselves (no download, no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from camtrap.augment import IMAGENET_MEAN, IMAGENET_STD
from camtrap.classes import COMPETITION_CLASSES
from camtrap.models import create_classifier
from camtrap.training import save_model_file


def random_model_file(path: Path, long_side: int, seed: int = 0, arch: str = "resnet10t") -> str:
    """A ``model.pt`` with random weights and random class priors, as ``train.py`` would write it."""
    torch.manual_seed(100 + seed)
    model = create_classifier(arch, num_classes=len(COMPETITION_CLASSES))
    priors = np.random.default_rng(seed).uniform(0.01, 0.3, len(COMPETITION_CLASSES))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model_file(str(path), model.state_dict(), {"model": arch, "name": path.parent.name},
                    COMPETITION_CLASSES, priors, long_side, IMAGENET_MEAN, IMAGENET_STD)
    return str(path)
