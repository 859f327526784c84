"""Errors of configuration files, and the one formatter that turns pydantic's errors into lines a user
can act on: ``recipe.yaml: stages.1.lr: Input should be greater than 0``.

The config layer imports nothing else of ``camtrap`` (everything else depends on it), so its errors
have their own base; :data:`camtrap.errors.USER_ERRORS` puts it beside the package's ``InputError``.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any, Union

from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the source and each bad field."""


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Union-with-None so the model class of a field can be found."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else annotation
    return annotation


def model_at(loc: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model class found at ``loc`` (e.g. ``("stages", 0)`` -> StageConfig), or None."""
    current: Any = root
    for part in loc:
        if isinstance(part, int):
            if typing.get_origin(current) is list:
                current = _unwrap(typing.get_args(current)[0])
                continue
            return None
        if (
            not (isinstance(current, type) and issubclass(current, BaseModel))
            or part not in current.model_fields
        ):
            return None
        current = _unwrap(current.model_fields[part].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for one-line messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: Error types raised by our own validators, whose messages already quote the value.
OWN_ERROR_TYPES = ("unknown_model", "unknown_tag", "pretrained_arch")


def _error_line(err: dict[str, Any], root: type[BaseModel]) -> str:
    loc = tuple(err["loc"])
    path = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        parent = model_at(loc[:-1], root)
        allowed = sorted(parent.model_fields) if parent is not None else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        known = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"{path}: unknown key{hint}{known}"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        return f"{path}: required field is missing"
    value = err.get("input")
    # pydantic's own messages do not quote the value; ours (ValueError / custom errors) already do.
    if not isinstance(value, (dict, list)) and err["type"] != "value_error" and err["type"] not in OWN_ERROR_TYPES:
        msg = f"{msg} (got {short_repr(value)})"
    return f"{path}: {msg}"


def format_validation_error(error: ValidationError, source: str, root: type[BaseModel], kind: str) -> str:
    """One line per problem, each starting with the dotted field path, under a line naming the source.

    ``root`` is the model the error's paths start from (to list the allowed keys of an unknown one);
    ``kind`` names what was invalid (``recipe``, ``tune space``).
    """
    lines = [_error_line(err, root) for err in error.errors()]
    return f"{source}: invalid {kind} ({len(lines)} problem{'s' if len(lines) != 1 else ''}):\n" + "\n".join(
        f"  {line}" for line in lines
    )
