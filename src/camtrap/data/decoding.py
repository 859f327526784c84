"""Which decode mode a training or scoring run uses, and the refusal of a silent mix.

The two modes of :mod:`camtrap.data.imageio` give slightly different pixels (mean gap under 1.5 levels),
and the 2nd-place write-up warns that decode differences between training and test cost score. So a
mode is never a per-job whim: a prepared folder records the mode its files were made with (its
manifest), ``model.pt`` records the mode its training images were made with, and:

* training takes the prepared folder's mode (a ``--decode`` that contradicts it is refused: the files
  are already decoded), or ``--decode`` for raw images (default exact);
* scoring takes the model's mode by default; scoring in another mode than a model was trained with, or
  an ensemble whose models differ, is refused naming both modes and the files, unless forced, and a
  forced run says so in one line.

Torch-free: the checks run in the driver before Ray starts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from camtrap.data import storage
from camtrap.data.imageio import DECODE_KEY, DEFAULT_DECODE, DecodeMode, check_decode
from camtrap.data.prepare import MANIFEST, prepared_decode
from camtrap.errors import InputError

#: The flag that lets scoring run in another mode than the models were trained with.
FORCE_FLAG = "--force-decode"


@dataclass(frozen=True)
class ImagesDecode:
    """How a job gets its pixels from an images folder.

    ``mode``: the mode the pixels are made with, what a model records and scoring checks. ``read``: the
    mode the job decodes its files with: ``mode`` for raw images; exact for a prepared folder, whose
    files already hold ``mode``'s pixels at their prepared size. ``source``: where ``mode`` came from,
    for messages.
    """

    mode: DecodeMode
    read: DecodeMode
    source: str

    def describe(self) -> str:
        return f"decode {self.mode} ({self.source})"


def images_decode(images_dir: str, requested: str | None, default: DecodeMode = DEFAULT_DECODE,
                  default_source: str = "the default") -> ImagesDecode:
    """The mode of a job reading ``images_dir``: a prepared folder's own, else ``requested`` or ``default``.

    A ``requested`` mode that contradicts a prepared folder's is refused, naming both: its files are
    already decoded, so the flag could not change their pixels.
    """
    folder = prepared_decode(images_dir)
    if folder is None:
        if requested is not None:
            return ImagesDecode(check_decode(requested), check_decode(requested), "--decode")
        return ImagesDecode(default, default, default_source)
    if requested is not None and requested != folder:
        raise InputError(
            f"{storage.join(images_dir, MANIFEST)}: {images_dir} was prepared with --decode {folder}; --decode "
            f"{requested} cannot change the pixels of its files. Drop --decode (the run then uses {folder}), or "
            f"use the raw images or a folder prepared with --decode {requested}"
        )
    return ImagesDecode(folder, DEFAULT_DECODE, f"the prepared folder's manifest, {images_dir}")


def pin_folder_decode(record: str, folder: str, choice: ImagesDecode, before_modes: bool = False,
                      error: type[InputError] = InputError) -> None:
    """Refuse to resume a run or sweep folder on images of another decode mode; record the mode of a new one.

    ``record``: the folder's ``decode.json``. ``before_modes``: the folder was used before the modes existed
    (it has other state but no record), so its pixels were exact. A model trained on a mix of exact and
    fast pixels would record neither honestly, and a sweep's trials must all see the pixels its best
    recipe will be trained on. Raises ``error`` naming both modes and the way out.
    """
    old = None
    if storage.exists(record):
        old = json.loads(storage.read_bytes(record)).get(DECODE_KEY)
    elif before_modes:
        old = DEFAULT_DECODE
    if old is not None and old != choice.mode:
        raise error(
            f"{record}: {folder} was made on decode {old} images; resuming it on decode {choice.mode} images "
            f"({choice.source}) would mix the two. Use --decode {old} (or a folder prepared with it), another "
            "--out, or --overwrite"
        )
    storage.write_bytes_atomic(record, json.dumps({DECODE_KEY: choice.mode}).encode())


def model_decodes(metas: Sequence[Mapping]) -> dict[str, DecodeMode]:
    """Each model file's decode mode, by path (a file from before the modes reads as exact)."""
    return {str(m["path"]): check_decode(m.get("decode", DEFAULT_DECODE)) for m in metas}


def scoring_decode(metas: Sequence[Mapping], images_dir: str, requested: str | None,
                   force: bool = False) -> ImagesDecode:
    """The mode a scoring run uses for ``metas`` (``model_metadata`` dicts) on ``images_dir``.

    Default: the models' own mode. Refused with :class:`InputError` naming both modes and the files,
    unless ``force``: an ensemble whose models were trained in different modes, and scoring in another
    mode than a model's (``requested``, or the prepared folder's). Forced, prints one warning line per
    mismatch and scores.
    """
    models = model_decodes(metas)
    first_path, first = next(iter(models.items()))
    differing = {p: m for p, m in models.items() if m != first}
    if differing and not force:
        listed = ", ".join(f"{p} ({m})" for p, m in models.items())
        raise InputError(
            f"the ensemble's models were trained on images of different decode modes: {listed}; one run scores "
            f"every model in one mode, so some would see pixels unlike their training. Score them apart, or pass "
            f"{FORCE_FLAG} (with --decode MODE) to score anyway"
        )
    choice = images_decode(images_dir, requested, default=first, default_source=f"the model's, {first_path}")
    for path, trained in models.items():
        if trained == choice.mode:
            continue
        if not force:
            raise InputError(
                f"{path}: this model was trained on decode {trained} images, but this run would score {images_dir} "
                f"with decode {choice.mode} (from {choice.source}); decode differences between training and "
                f"scoring cost score. Score with --decode {trained} (a prepared folder: one prepared with "
                f"--decode {trained}), or pass {FORCE_FLAG} to score anyway"
            )
        print(f"predict: warning: {FORCE_FLAG}: scoring with decode {choice.mode} a model trained on decode "
              f"{trained} ({path})", flush=True)
    return choice

