"""``--set KEY=VALUE`` overrides of a recipe: dotted paths, YAML values, re-validated."""

from __future__ import annotations

import difflib
import re
from typing import Any

import yaml

from camtrap.config.errors import model_at
from camtrap.config.recipe import Recipe, RecipeError

_VALIDATION_KINDS = {
    "prefix": ("fraction", "metadata", "labels"),
    "fraction": ("prefix", "metadata", "labels"),
    "metadata": ("prefix", "fraction"),
    "labels": ("prefix", "fraction"),
}


def _parse_override(text: str) -> tuple[list[str | int], Any]:
    if "=" not in text:
        raise RecipeError(f"override '{text}': expected KEY=VALUE, e.g. stages.0.lr=0.01")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise RecipeError(f"override '{text}': empty key or empty part in '{key}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise RecipeError(f"override '{text}': value is not valid YAML: {e}") from None
    parts: list[str | int] = [int(p) if re.fullmatch(r"-?\d+", p) else p for p in key.split(".")]
    return parts, value


def _set_path(data: dict[str, Any], parts: list[str | int], value: Any, text: str) -> None:
    """Set ``data[parts...] = value``; every key must be a field of the model found along the path."""
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(str(p) for p in parts[:depth]) or "the recipe"
        if isinstance(node, list):
            if not isinstance(part, int):
                raise RecipeError(f"override '{text}': '{where}' is a list; expected an index, got '{part}'")
            if not -len(node) <= part < len(node):
                raise RecipeError(
                    f"override '{text}': index {part} out of range ({where} has {len(node)} entries)"
                )
        elif isinstance(node, dict):
            model = model_at(tuple(parts[:depth]), Recipe)
            allowed = sorted(model.model_fields) if model is not None else sorted(node)
            if part not in allowed:
                close = difflib.get_close_matches(str(part), allowed, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise RecipeError(
                    f"override '{text}': unknown key '{part}' in {where}{hint} (allowed: {', '.join(allowed)})"
                )
        else:
            raise RecipeError(f"override '{text}': '{where}' is a value, not a mapping or list")
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and node.get(part) is None:
                node[part] = {}
            node = node[part]


def apply_overrides(recipe: Recipe, overrides: list[str] | tuple[str, ...]) -> Recipe:
    """A new recipe with ``KEY=VALUE`` overrides applied, then re-validated.

    Keys are dotted paths with integer list indices (``stages.0.lr=0.01``); values are parsed as YAML
    (``amp=off``, ``stages.1={long_side: 128, batch_size: 8, lr: 0.01, epochs: 1}``). Setting one kind of
    validation split clears the others (``validation.fraction=0.2`` on a prefix recipe switches to a
    random split), since only one kind may be set. A bad key or value raises :class:`RecipeError`.
    """
    data = recipe.model_dump(mode="python")
    for text in overrides:
        parts, value = _parse_override(text)
        _set_path(data, parts, value, text)
        if (
            len(parts) == 2
            and parts[0] == "validation"
            and parts[1] in _VALIDATION_KINDS
            and value is not None
        ):
            for other in _VALIDATION_KINDS[parts[1]]:
                data["validation"][other] = None
    source = f"recipe '{recipe.name}' with overrides {list(overrides)}"
    return Recipe.from_dict(data, source=source)
