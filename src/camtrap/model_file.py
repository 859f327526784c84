"""The one reader and writer of ``model.pt`` and of the weights-only state files training keeps.

``model.pt`` is self-contained: the weights plus everything scoring needs to use them (the recipe, the
class list, the training class priors, the inference long side, the normalisation, the decode mode its
training images were made with). Every file here is
written with ``torch.save`` and read with ``torch.load(weights_only=True)``, so a crafted pickle is
refused before any of its objects is built.

torch is imported inside the functions, not at module import: the torch-free parts of the package
(evaluation, reports) import this module to read a model's priors without paying for torch until
they actually read a file. Building the network from a model file is
:func:`camtrap.train.models.load_trained`.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from typing import Any

from camtrap.data import storage
from camtrap.errors import InputError

#: Written into every ``model.pt``; a file without it is refused as "not a camtrap model file".
MODEL_FORMAT = "camtrap.model/1"
#: Keys of a ``model.pt`` besides ``format`` and ``model`` (the weights).
MODEL_KEYS: tuple[str, ...] = (
    "recipe", "classes", "priors", "inference_long_side", "mean", "std", "metrics", "decode",
)
#: The decode mode of a ``model.pt`` written before the modes existed: they were all trained on exact pixels.
LEGACY_DECODE = "exact"

__all__ = [
    "MODEL_FORMAT",
    "model_metadata",
    "read_model_file",
    "read_state_file",
    "save_model_file",
    "state_from_bytes",
    "state_to_bytes",
]


def state_to_bytes(state: dict[str, Any]) -> bytes:
    """``torch.save`` of tensors and plain containers, to bytes (for storage URIs and the object store)."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def state_from_bytes(blob: bytes) -> dict[str, Any]:
    """Inverse of :func:`state_to_bytes`; ``weights_only=True``, so a crafted pickle is refused."""
    import torch

    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def read_state_file(path: str) -> dict[str, Any]:
    """Load a ``best.pt``/``model.pt``/checkpoint from a path or URI.

    Only tensors and plain containers load: a file that would run code when unpickled is refused
    (``InputError`` naming it) before any of its objects is built.
    """
    return _weights_only(path, storage.read_bytes(path))


def _weights_only(path: str, blob: bytes) -> dict[str, Any]:
    """:func:`state_from_bytes`, with a refused pickle reported as ``InputError`` naming ``path``."""
    try:
        return state_from_bytes(blob)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0][:300]
        raise InputError(f"{path}: refused: not a weights-only checkpoint ({reason})") from None


def _model_bytes(path: str) -> bytes:
    try:
        return storage.read_bytes(path)
    except FileNotFoundError:
        raise InputError(f"{path}: model file not found") from None


def save_model_file(
    path: str,
    weights: dict[str, Any],
    recipe: dict[str, Any],
    classes: Sequence[str],
    priors: Sequence[float],
    inference_long_side: int,
    mean: Sequence[float],
    std: Sequence[float],
    metrics: dict[str, Any] | None = None,
    decode: str = LEGACY_DECODE,
) -> None:
    """Write a self-contained ``model.pt`` atomically: everything scoring needs, loadable with ``weights_only``.

    ``decode``: the mode the training images were decoded with (:data:`camtrap.data.imageio.DECODE_MODES`);
    scoring takes it as its default and refuses another unless forced (:mod:`camtrap.data.decoding`).
    """
    state = {
        "format": MODEL_FORMAT,
        "model": weights,
        "recipe": dict(recipe),
        "classes": list(classes),
        "priors": [float(p) for p in priors],
        "inference_long_side": int(inference_long_side),
        "mean": [float(m) for m in mean],
        "std": [float(x) for x in std],
        "metrics": dict(metrics or {}),
        "decode": str(decode),
    }
    storage.write_bytes_atomic(path, state_to_bytes(state))


def read_model_file(path: str, blob: bytes | None = None) -> dict[str, Any]:
    """The whole ``model.pt`` as a dict; ``InputError`` naming the file if it is missing, damaged, not a
    camtrap model, or holds non-finite weights (a diverged run must not score a season of NaN)."""
    import torch

    blob = _model_bytes(path) if blob is None else blob
    try:
        state = _weights_only(path, blob)
    except (RuntimeError, EOFError, OSError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise InputError(f"{path}: not a readable model file ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise InputError(f"{path}: not a camtrap model file (format {found!r})")
    bad = [k for k, v in state["model"].items()
           if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise InputError(f"{path}: {len(bad)} weight tensors hold NaN or infinity (e.g. {bad[:3]}): the run that "
                         "wrote it diverged; retrain it")
    return state


def model_metadata(path: str) -> dict[str, Any]:
    """A ``model.pt``'s metadata (everything but the weights), plus ``path`` and ``sha256`` (its content,
    which keys the results a scoring job keeps for resume). A file without ``decode`` reads as exact."""
    import hashlib

    blob = _model_bytes(path)
    state = {"decode": LEGACY_DECODE} | read_model_file(path, blob)
    return {k: v for k, v in state.items() if k != "model"} | {"path": path,
                                                                 "sha256": hashlib.sha256(blob).hexdigest()}
