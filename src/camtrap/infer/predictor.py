"""The model actor of batch scoring: one model, loaded once per actor, flip TTA at its own long side."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from camtrap.data.frames import ERROR, IMAGE
from camtrap.data.imageio import resize_long_side
from camtrap.train.augment import DeviceNormalizer
from camtrap.train.models import forward_by_shape, load_trained


def prob_column(model_index: int) -> str:
    """The results column of the ``model_index``-th model of an ensemble (views x classes, flattened)."""
    return f"probs_{model_index}"


class FlipTTAPredictor:
    """Ray Data actor: one model, loaded once per actor, scored with flip TTA at its own long side."""

    def __init__(self, model_path: str, column: str, device: str = "auto", threads: int = 1):
        torch.set_num_threads(max(1, threads))
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.model, meta = load_trained(model_path, self.device)
        self.long_side = int(meta["inference_long_side"])
        self.norm = DeviceNormalizer(meta["mean"], meta["std"], self.device)
        self.column = column

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = [i for i, e in enumerate(batch[ERROR]) if not e]
        resized = [np.asarray(resize_long_side(Image.fromarray(batch[IMAGE][i]), self.long_side)) for i in ok]
        probs = forward_by_shape(self.model, resized, self.norm, flip=True) if ok else None
        col = np.empty(len(batch[ERROR]), dtype=object)
        for j in range(len(col)):
            col[j] = np.zeros((0,), np.float32)
        for k, i in enumerate(ok):
            col[i] = probs[k].reshape(-1)  # views x classes, flattened (Arrow wants 1-D cells)
        batch[self.column] = col
        return batch
