"""The training worker's batches: an epoch dataset's images collated, pinned and on the device before the
step asks for them.

:func:`train_batches` runs the collate (:class:`PadCollate`), the pinning and the host-to-device copy in
Ray Data's prefetch threads (``iter_torch_batches``), :data:`PREFETCH_BATCHES` ahead, so the worker's
thread only steps the model. :func:`pad_batch` is the padding rule for a batch of mixed sizes, shared with
the plain baselines of the benches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from camtrap.train.dataset import IMAGE, TARGET


def pad_batch(images: Sequence[np.ndarray], fill: np.ndarray) -> np.ndarray:
    """Stack uint8 HWC images of different sizes, padding bottom/right with ``fill`` (the mean pixel).

    Serengeti frames are all 4:3, so in the competition setting nothing is padded; a dataset mixing
    4:3 and 16:9 still trains, with padding that normalises to zero.
    """
    h = max(im.shape[0] for im in images)
    w = max(im.shape[1] for im in images)
    out = np.empty((len(images), h, w, 3), dtype=np.uint8)
    out[:] = fill
    for i, im in enumerate(images):
        out[i, : im.shape[0], : im.shape[1]] = im
    return out


#: Batches the worker's iterator prepares ahead of the step (fetch, batch, collate, pin, copy to the
#: device), in Ray Data's prefetch threads: one step's worth of slack on a bursty decode pipeline.
PREFETCH_BATCHES = 4


class PadCollate:
    """Ray Data collate of a training batch: ``{image: uint8 NHWC tensor, target: float32 tensor}``.

    Runs in the iterator's prefetch threads, not the training loop. Equal-size images (every
    Serengeti crop) arrive as one uint8 array and pass through without a copy; mixed sizes are padded
    with :func:`pad_batch`. Returning tensors lets Ray pin them and copy them to the device in the same
    threads (``iter_torch_batches(pin_memory=True, device=...)``).
    """

    def __init__(self, fill: np.ndarray):
        self.fill = fill

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        images = batch[IMAGE]
        if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4):
            images = pad_batch(images, self.fill)
        target = np.asarray(batch[TARGET] if batch[TARGET].dtype != object else np.stack(batch[TARGET]), np.float32)
        return {IMAGE: _tensor(images), TARGET: _tensor(target)}


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor over ``array`` (copied only when Ray handed out a read-only view of its block)."""
    array = np.ascontiguousarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def train_batches(dataset, batch_size: int, device: torch.device, fill: np.ndarray,
                  prefetch_batches: int | None = None):
    """The training batches of an epoch dataset, collated, pinned and on ``device`` when they reach the loop.

    The collate, the pinning and the host-to-device copy run in Ray Data's prefetch threads
    (``iter_torch_batches``), so the loop's thread only steps the model.
    """
    from ray.data.collate_fn import NumpyBatchCollateFn

    class _Collate(PadCollate, NumpyBatchCollateFn):
        pass

    if prefetch_batches is None:  # a CPU worker computes on the cores its prefetch threads would take
        prefetch_batches = PREFETCH_BATCHES if device.type == "cuda" else 1
    return dataset.iter_torch_batches(batch_size=batch_size, collate_fn=_Collate(fill), device=device,
                                      pin_memory=device.type == "cuda", drop_last=True,
                                      prefetch_batches=prefetch_batches)
