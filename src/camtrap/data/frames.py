"""Reading and decoding frames in Ray Data tasks, apart from the model code.

A task's worker imports the module its function lives in. Kept free of torch, a decode worker starts
in a fraction of a second and holds a fraction of the memory (about 150 MB instead of 600 MB with
torch loaded), which is what a scoring job on a small machine is made of.

Scoring's decode tasks also do the models' resize (:func:`decode_batch` with ``long_sides``), so the
model actors, which hold the GPUs, only stack, copy and forward: a CPU task does every PIL call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from camtrap.data import storage
from camtrap.data.classes import FILE_NAME, SEQ_ID
from camtrap.data.imageio import (
    DEFAULT_DECODE,
    PREPARE_LONG_SIDE,
    DecodeMode,
    ImageDecodeError,
    load_resized,
    resize_long_side,
)

IMAGE = "image"
ERROR = "error"


def image_column(long_side: int | None = None) -> str:
    """The column of decoded images: at the preparation rule's 512 px (``None``: :data:`IMAGE`), or resized on
    from there to a model's inference long side (``image_<long_side>``, what that model's actor reads)."""
    return IMAGE if long_side is None else f"{IMAGE}_{int(long_side)}"


def decode_batch(
    batch: dict[str, np.ndarray], images_dir: str, decode: DecodeMode = DEFAULT_DECODE,
    long_sides: Sequence[int] = (),
) -> dict[str, np.ndarray]:
    """Ray Data task: read and decode each image with the preparation rule in mode ``decode``; record failures.

    No ``long_sides``: one :data:`IMAGE` column at the preparation rule's 512 px. With them: instead, one
    column per long side (:func:`image_column`), each the 512-px image resized on with the seed's rule
    (:func:`camtrap.data.imageio.resize_long_side`), the very pixels a model actor made itself before: an
    ensemble's models that share a long side share a column, and models that differ get one each, every
    resize done here on a CPU. A failed image is an empty array in every column and its reason in :data:`ERROR`.
    """
    long_sides = list(dict.fromkeys(int(side) for side in long_sides))
    columns = [image_column(side) for side in long_sides] if long_sides else [IMAGE]
    images = {c: np.empty(len(batch[FILE_NAME]), dtype=object) for c in columns}
    errors = []
    for i, name in enumerate(batch[FILE_NAME]):
        path = storage.join(images_dir, str(name))
        try:
            img, _ = load_resized(storage.read_inside(images_dir, str(name)), PREPARE_LONG_SIDE, decode=decode)
            if long_sides:
                for side, column in zip(long_sides, columns):
                    images[column][i] = np.asarray(resize_long_side(img, side))
            else:
                images[IMAGE][i] = np.asarray(img)
            errors.append("")
        except FileNotFoundError:
            errors.append(f"{name}: file not found: {path}")
        except (ImageDecodeError, OSError) as e:
            errors.append(f"{name}: {e}")
        if errors[-1]:
            for column in columns:
                images[column][i] = np.zeros((0, 0, 3), np.uint8)
    return {FILE_NAME: batch[FILE_NAME], SEQ_ID: batch[SEQ_ID], **images, ERROR: np.asarray(errors, dtype=object)}
