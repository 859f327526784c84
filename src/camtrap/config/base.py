"""What every config schema shares: strict models, safe names, and validation of plain data."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from camtrap.config.errors import ConfigError, format_validation_error
from camtrap.config.loading import available, read_yaml, resolve_yaml_path

#: Names that become folder names (recipes, stages, spaces): no path separators, no leading dot.
SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo such as ``lrr: 0.01`` is not silently ignored); assignments are
    validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ConfigFile(StrictModel):
    """A top-level config (a recipe, a tune space): validated from plain data with errors a user can act on.

    Subclasses set ``kind`` (for messages), ``error_class``, the ``folder`` of the files shipped with the
    project (``folder_label`` says how: "packaged", "shipped") and, when an error's path must be looked
    up in another shape than the model itself, ``error_root``.
    """

    kind: ClassVar[str] = "config"
    error_class: ClassVar[type[ConfigError]] = ConfigError
    folder: ClassVar[Path]
    folder_label: ClassVar[str] = "shipped"

    @classmethod
    def available(cls) -> list[str]:
        """Names of the files shipped in ``folder``."""
        return available(cls.folder)

    @classmethod
    def resolve_path(cls, path_or_name: str | Path) -> Path:
        """A path to a YAML file, or a bare name of a shipped one -> its file."""
        return resolve_yaml_path(path_or_name, cls.folder, cls.kind, cls.folder_label, cls.error_class)

    @classmethod
    def load(cls, path_or_name: str | Path):
        """Read and validate a YAML file or a shipped name; ``error_class`` naming the file if invalid."""
        path = cls.resolve_path(path_or_name)
        return cls.from_dict(read_yaml(path, cls.error_class), source=str(path))

    @classmethod
    def error_root(cls) -> type[BaseModel]:
        return cls

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>"):
        """Validate plain data; ``error_class`` naming ``source`` and every bad field on failure."""
        if not isinstance(data, dict):
            raise cls.error_class(
                f"{source}: a {cls.kind} must be a mapping of keys to values, got {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise cls.error_class(format_validation_error(e, source, cls.error_root(), cls.kind)) from None
