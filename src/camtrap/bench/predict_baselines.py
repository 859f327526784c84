"""The plain scoring loops the predict bench measures the platform against: what a user would write.

:func:`plain_predict`: one process decodes (the preparation rule at 512), resizes to the model's long side
and scores each batch with flip TTA. :func:`loader_predict`: the GPU user's loop, a ``DataLoader`` whose
worker processes decode, one process doing flip TTA under bf16 autocast in batches of 256, as
``../shared/gpu/plain_predict.py``. Both end with the geometric mean per sequence.

Written apart from :mod:`camtrap.infer` on purpose: the equality check of the bench is only worth something
if the two sides do not share their scoring code.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from camtrap.data import storage
from camtrap.data.classes import FILE_NAME, SEQ_ID
from camtrap.data.imageio import PREPARE_LONG_SIDE, ImageDecodeError, load_resized, resize_long_side
from camtrap.infer.submission import SUBMISSION_EPS
from camtrap.metrics import EPS
from camtrap.train.models import load_trained


def _decoded(images_dir: str, name: str, long_side: int) -> np.ndarray | None:
    """One file decoded with the preparation rule (long side 512, as ``frames.decode_batch``) and resized to
    the model's long side; None where it does not decode."""
    try:
        img, _ = load_resized(storage.read_bytes(storage.join(images_dir, str(name))), PREPARE_LONG_SIDE)
    except (ImageDecodeError, OSError):
        return None
    return np.asarray(resize_long_side(img, long_side))


def _sequence_submission(frame: pd.DataFrame, seq_of_view: list, views: list, meta: dict) -> pd.DataFrame:
    """The geometric mean over a sequence's images x flips, clipped as the submission is; one row per
    ``seq_id`` of ``frame`` (its order; a sequence with no decodable image gets the priors)."""
    classes = list(meta["classes"])
    logs = pd.DataFrame(np.log(np.maximum(np.asarray(views, dtype=np.float64).reshape(-1, len(classes)), EPS)),
                        columns=classes)
    gmean = np.exp(logs.groupby(pd.Index(seq_of_view, name=SEQ_ID), sort=False).mean())
    order = list(dict.fromkeys(frame[SEQ_ID]))
    sub = gmean.reindex(order)
    missing = sub.isna().any(axis=1)
    sub.loc[missing] = np.asarray(meta["priors"], dtype=np.float64)
    return sub.clip(SUBMISSION_EPS, 1 - SUBMISSION_EPS).reset_index()


def plain_predict(model_path: str, frame: pd.DataFrame, images_dir: str, batch_size: int = 16,
                  device: str = "cpu") -> pd.DataFrame:
    """The baseline a user would write in one process, written apart from :mod:`camtrap.infer.predict`.

    Per batch of ``batch_size`` rows: decode with the preparation rule (long side 512, as
    ``frames.decode_batch``), resize to the model's inference long side (as the decode tasks do),
    normalise, forward the images of each size together with their horizontal flips, sigmoid. Then
    the geometric mean over a sequence's images x flips, clipped as the submission is. Returns one row
    per ``seq_id`` (metadata order; a sequence with no decodable image gets the priors), the model's
    class columns. Runs at fp32, as the platform's predictor does on CPU.
    """
    model, meta = load_trained(model_path, device)
    mean = torch.tensor(meta["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"], device=device).view(1, 3, 1, 1)
    long_side = int(meta["inference_long_side"])
    rows = list(zip(frame[FILE_NAME], frame[SEQ_ID]))
    seq_of_view, views = [], []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            by_size: dict[tuple, list] = {}
            for name, seq in rows[start:start + batch_size]:
                arr = _decoded(images_dir, name, long_side)
                if arr is not None:
                    by_size.setdefault(arr.shape, []).append((seq, arr))
            for items in by_size.values():
                x = torch.from_numpy(np.stack([a for _, a in items])).to(device)
                x = (x.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
                p = torch.sigmoid(model(torch.cat([x, torch.flip(x, dims=(3,))]))).float().cpu().numpy()
                n = len(items)
                for k, (seq, _) in enumerate(items):
                    seq_of_view += [seq, seq]
                    views += [p[k], p[n + k]]
    return _sequence_submission(frame, seq_of_view, views, meta)


class _DecodeFiles(torch.utils.data.Dataset):
    """:func:`loader_predict`'s dataset: ``(seq_id, image or None)``, decoded in the DataLoader's workers."""

    def __init__(self, rows: Sequence[tuple[str, str]], images_dir: str, long_side: int):
        self.rows, self.images_dir, self.long_side = list(rows), images_dir, long_side

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray | None]:
        name, seq = self.rows[i]
        return seq, _decoded(self.images_dir, name, self.long_side)


def _collate_by_size(items: list[tuple[str, np.ndarray | None]]) -> list[tuple[list[str], torch.Tensor]]:
    """A batch as ``[(seq_ids, uint8 NHWC tensor)]``, one entry per image size; failed images left out.
    Tensors, so the DataLoader's ``pin_memory`` pins them."""
    groups: dict[tuple, list] = {}
    for seq, arr in items:
        if arr is not None:
            groups.setdefault(arr.shape, []).append((seq, arr))
    return [([s for s, _ in g], torch.from_numpy(np.stack([a for _, a in g]))) for g in groups.values()]


def loader_workers() -> int:
    """DataLoader workers of :func:`loader_predict` in the bench: every CPU of this process but one (the
    one that drives the GPU), as ``../shared/gpu/plain_predict.py`` ran 15 on 16 cores."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, cpus - 1)


def loader_predict(model_path: str, frame: pd.DataFrame, images_dir: str, batch_size: int = 256,
                   workers: int = 1, device: str = "cuda", amp: str = "bf16") -> pd.DataFrame:
    """The plain GPU scoring loop a user would write, apart from :mod:`camtrap.infer`: a ``DataLoader`` whose
    ``workers`` processes decode (preparation rule at 512, then the model's long side: the platform's CPU
    work per image), ``pin_memory`` on CUDA; one process forwards each batch and its horizontal flip,
    channels_last on CUDA, under ``amp`` autocast (``bf16``, ``fp16`` or ``off``), sigmoid in float32.
    Returns what :func:`plain_predict` returns. ``workers`` 0 decodes in this process.
    """
    dev = torch.device(device)
    model, meta = load_trained(model_path, dev)
    cuda = dev.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    mean = torch.tensor(meta["mean"], device=dev).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"], device=dev).view(1, 3, 1, 1)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]
    autocast = (lambda: torch.autocast(dev.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
    rows = list(zip(frame[FILE_NAME], frame[SEQ_ID]))
    loader = torch.utils.data.DataLoader(_DecodeFiles(rows, images_dir, int(meta["inference_long_side"])),
                                         batch_size=batch_size, num_workers=workers, pin_memory=cuda,
                                         collate_fn=_collate_by_size)
    seq_of_view, views = [], []
    with torch.inference_mode():
        for groups in loader:
            for seqs, batch in groups:
                x = batch.to(dev, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
                x = (x - mean) / std
                if cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast():
                    logits = model(torch.cat([x, torch.flip(x, dims=(3,))]))
                p = torch.sigmoid(logits.float()).cpu().numpy()
                n = len(seqs)
                for k, seq in enumerate(seqs):
                    seq_of_view += [seq, seq]
                    views += [p[k], p[n + k]]
    return _sequence_submission(frame, seq_of_view, views, meta)
