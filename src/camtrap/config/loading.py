"""Finding and reading config YAML: a path, or a bare name of a file shipped with the project."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from camtrap.config.errors import ConfigError


def resolve_yaml_path(
    path_or_name: str | Path, folder: Path, kind: str, label: str, error: type[ConfigError] = ConfigError
) -> Path:
    """A path to a YAML file, or a bare name of one in ``folder`` -> its file.

    Shared by recipes (``packaged`` in ``camtrap/config/recipes``) and tune spaces (``shipped`` in
    ``tune_spaces/``), so both accept and refuse the same things with the same messages.
    """
    text = str(path_or_name)
    path = Path(text)
    looks_like_path = path.suffix in (".yaml", ".yml") or "/" in text or "\\" in text or path.exists()
    if looks_like_path:
        if not path.is_file():
            raise error(f"{text}: {kind} file not found")
        return path
    named = folder / f"{text}.yaml"
    if not named.is_file():
        names = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
        raise error(f"{text}: no such {kind} file, and not a {label} name in {folder} ({label}: {names})")
    return named


def read_yaml(path: Path, error: type[ConfigError] = ConfigError) -> Any:
    """The parsed YAML of a config file; ``error`` naming the file if unreadable or empty."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read: {e}") from None
    if data is None:
        raise error(f"{path}: the file is empty")
    return data


def available(folder: Path) -> list[str]:
    """Names of the YAML files in ``folder``."""
    return sorted(p.stem for p in folder.glob("*.yaml"))
