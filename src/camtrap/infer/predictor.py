"""The model actor of batch scoring: one model, loaded once per actor, flip TTA at its own long side.

The actor's thread only stacks, copies and forwards: the decode tasks have already resized every image to
this model's inference long side (:func:`camtrap.data.frames.decode_batch`, column
:func:`camtrap.data.frames.image_column`). On CUDA the batch goes through page-locked memory with a
non-blocking copy, the model runs channels_last under autocast (``amp``, training's rule:
:func:`camtrap.train.loop.resolve_amp`) and the sigmoid is taken in float32 after the forward.
"""

from __future__ import annotations

import numpy as np
import torch

from camtrap.data.frames import ERROR, image_column
from camtrap.train.augment import DeviceNormalizer
from camtrap.train.loop import autocast_factory, resolve_amp
from camtrap.train.models import forward_by_shape, in_batch_layout, load_trained


def prob_column(model_index: int) -> str:
    """The results column of the ``model_index``-th model of an ensemble (views x classes, flattened)."""
    return f"probs_{model_index}"


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA where this process sees a device, else the CPU (a simulated GPU node has none)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def scoring_autocast(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a model actor on ``device`` for ``--amp`` (None: float32): training's rule
    (:func:`camtrap.train.loop.resolve_amp`; scoring has no GradScaler). ``auto``: bf16 on CUDA from compute
    capability 8.0, fp16 below, off on CPU (bf16 autocast there was measured about 12x slower than fp32)."""
    return resolve_amp(amp, device)[0]


class FlipTTAPredictor:
    """Ray Data actor: one model, loaded once per actor, scored with flip TTA at its own long side.

    ``amp``: ``auto`` | ``off`` | ``bf16`` | ``fp16`` for this actor's device (``auto``: bf16 from compute
    capability 8.0, fp16 below, off on CPU). Reads :func:`camtrap.data.frames.image_column` of its model's
    inference long side: images decoded and resized in CPU tasks.
    """

    def __init__(self, model_path: str, column: str, device: str = "auto", threads: int = 1, amp: str = "auto",
                 drop: tuple[str, ...] = ()):
        torch.set_num_threads(max(1, threads))
        self.device = resolve_device(device)
        self.model, meta = load_trained(model_path, self.device)
        self.long_side = int(meta["inference_long_side"])
        self.image_column = image_column(self.long_side)
        cuda = self.device.type == "cuda"
        self.amp_dtype = scoring_autocast(amp, self.device)
        self.autocast = autocast_factory(self.amp_dtype, self.device)
        if cuda:
            # Batches arrive NHWC and the normaliser permutes them without a copy: channels_last, the fast
            # layout of convolutions under CUDA autocast. Frames of a season share a few sizes: let cuDNN
            # pick its fastest algorithm for each once.
            self.model = in_batch_layout(self.model)
            torch.backends.cudnn.benchmark = True
        self.norm = DeviceNormalizer(meta["mean"], meta["std"], self.device, pin_memory=cuda)
        self.column = column
        #: Image columns no later model reads: left out of this actor's output, so hundreds of decoded
        #: frames per call do not go back through the object store only to be dropped.
        self.drop = frozenset(drop)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.image_column not in batch:
            raise KeyError(f"{self.image_column}: no images at this model's long side {self.long_side} in the batch "
                           f"(columns {sorted(batch)}); decode_batch(long_sides=...) must include it")
        images = batch[self.image_column]
        ok = [i for i, e in enumerate(batch[ERROR]) if not e]
        if len(ok) == len(images) and isinstance(images, np.ndarray) and images.ndim == 4:
            scored = images  # one size, no error: Ray's batch is already the stacked array
        else:
            scored = [images[i] for i in ok]
        probs = forward_by_shape(self.model, scored, self.norm, flip=True, autocast=self.autocast) if ok else None
        col = np.empty(len(batch[ERROR]), dtype=object)
        for j in range(len(col)):
            col[j] = np.zeros((0,), np.float32)
        for k, i in enumerate(ok):
            col[i] = probs[k].reshape(-1)  # views x classes, flattened (Arrow wants 1-D cells)
        out = {k: v for k, v in batch.items() if k not in self.drop}
        out[self.column] = col
        return out
