"""Training recipes: pydantic models, YAML in and out, ``key=value`` overrides.

A recipe is data, as in the 2nd-place code: the model, where its weights come from, what is frozen, the
optimizer, the validation split and a list of stages (progressive resizing). Each stage is a separate
fit that starts from the previous stage's best checkpoint; :mod:`camtrap.train.driver` runs the list.

Every model forbids unknown keys, so a typo (``lrr: 0.01``) is an error rather than a silently ignored
setting. An invalid file raises :class:`RecipeError`; its message names the file and gives one line
per problem, each starting with the field path (``stages.1.lr``) so the user knows what to edit.

Packaged recipes live in ``camtrap/config/recipes/<name>.yaml``; :func:`load_recipe` takes either a path or
such a bare name. ``--set`` overrides are in :mod:`camtrap.config.overrides`.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from camtrap.config.base import SAFE_NAME, ConfigFile, StrictModel
from camtrap.config.errors import ConfigError, short_repr

#: Folder of the packaged recipes (``load_recipe("cpu_tiny")``).
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"

#: File endings taken as a local weights file rather than a timm pretrained tag.
WEIGHT_FILE_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".bin", ".safetensors")

#: ``pretrained`` value meaning "the timm model's default pretrained tag".
TIMM_DEFAULT = "timm"


#: Bounds past which a value is a typo, not a setting: the seed trained at 296-480 px and LR 0.003-0.005.
MAX_LONG_SIDE = 4096
MAX_LR = 10.0


class RecipeError(ConfigError):
    """A recipe file or override is invalid; the message names the source and each bad field."""


def crop_long_side(long_side: int, crop_ratio: float) -> int:
    """Long side of the train crop: ``long_side / crop_ratio`` rounded to the nearest multiple of 16.

    With the seed's 1.14 this reproduces the 2nd-place table exactly: 296 -> 256, 360 -> 320,
    480 -> 416. Halves round up (``floor(x + 0.5)``), not to even as Python's ``round`` would. It lives
    with the recipe because a stage whose crop would be empty is an invalid recipe, refused on load.
    """
    if long_side < 16:
        raise ValueError(f"long_side must be at least 16, got {long_side}")
    if not (crop_ratio >= 1.0 and math.isfinite(crop_ratio)):
        raise ValueError(f"crop_ratio must be a finite number >= 1.0, got {crop_ratio}")
    crop = math.floor(long_side / crop_ratio / 16 + 0.5) * 16
    if crop < 16:
        raise ValueError(
            f"crop long side for long_side {long_side} and crop_ratio {crop_ratio} rounds to {crop} px; "
            f"it must be at least 16 (lower crop_ratio or raise long_side)"
        )
    return crop


class StageConfig(StrictModel):
    """One progressive-resizing stage: a separate fit from the previous stage's best checkpoint.

    Field order matters: ``lr`` and ``epochs`` come before the fields checked against them, so the
    cross-field errors point at ``min_lr`` / ``warmup_epochs`` themselves.
    """

    name: str | None = Field(default=None, pattern=SAFE_NAME, description="default: stage{i}")
    long_side: int = Field(ge=32, le=MAX_LONG_SIDE, description="resize the long side to this (the seed's rule)")
    crop_ratio: float = Field(default=1.14, ge=1.0, allow_inf_nan=False,
                              description="train crop long side = long_side / ratio")
    batch_size: int = Field(ge=1, le=65536, description="per worker")
    epochs: int = Field(ge=1, le=10000)
    lr: float = Field(gt=0, le=MAX_LR, allow_inf_nan=False, description="peak LR, reached at the end of warmup")
    min_lr: float = Field(
        default=0.0, ge=0, allow_inf_nan=False, description="floor of the cosine decay, reached at the last step"
    )
    warmup_epochs: float = Field(default=0.0, ge=0, allow_inf_nan=False,
                                 description="linear warmup length (fractions allowed)")

    @field_validator("crop_ratio")
    @classmethod
    def _crop_not_empty(cls, v: float, info) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        long_side = info.data.get("long_side")
        if long_side is not None:
            crop_long_side(long_side, v)  # its ValueError says why the crop would be empty
        return v

    @field_validator("min_lr", "warmup_epochs")
    @classmethod
    def _at_most_its_bound(cls, v: float, info) -> float:
        """``min_lr <= lr`` (a floor above the peak) and ``warmup_epochs <= epochs`` (a warmup past the end)."""
        bound = {"min_lr": "lr", "warmup_epochs": "epochs"}[info.field_name]
        limit = info.data.get(bound)
        if limit is not None and v > limit:
            raise ValueError(f"{info.field_name} ({v}) must be <= {bound} ({limit})")
        return v


class OptimizerConfig(StrictModel):
    """SGD as the 2nd-place code ran it (momentum 0.9, weight decay 1e-4, no Nesterov), or AdamW.

    AdamW is for training from scratch in minutes (``cpu_tiny``): the loss averages over every class, so
    with 54 classes of which a few are ever positive SGD's steps are ~50x too small until the LR is
    retuned, while Adam's per-parameter scaling is indifferent to that. ``momentum`` and ``nesterov``
    apply to SGD only.
    """

    name: Literal["sgd", "adamw"] = "sgd"
    momentum: float = Field(default=0.9, ge=0, lt=1, allow_inf_nan=False)
    weight_decay: float = Field(default=1e-4, ge=0, le=1, allow_inf_nan=False)
    nesterov: bool = False


class ScalingConfig(StrictModel):
    """How many DDP workers a run uses and on what: part of the recipe, as in the seed (8 GPUs).

    ``batch_size`` of each stage is per worker, as in the seed, and each stage's ``lr`` is the LR for
    ``num_workers`` workers: a run with another worker count (``train.py --num-workers``) scales ``lr`` and
    ``min_lr`` linearly with the global batch (Goyal et al.'s rule) unless ``scale_lr`` is off.
    ``use_gpu: auto`` takes GPUs when the cluster has them or its autoscaler can add nodes with them.
    """

    num_workers: int = Field(default=2, ge=1, description="DDP workers (the LR is the recipe's at this count)")
    use_gpu: Literal["auto"] | bool = Field(default="auto", description="auto: GPUs when the cluster can have them")
    cpus_per_worker: float | None = Field(default=None, gt=0, description="None: sized from one node's CPUs")
    scale_lr: bool = Field(default=True, description="scale lr/min_lr linearly with another worker count")


ValidationKind = Literal["prefix", "fraction", "files"]


class ValidationConfig(StrictModel):
    """Which images are held out. Exactly one kind:

    * ``prefix``: every ``file_name`` starting with it (the seed held out season 10: ``"S10/"``);
    * ``fraction`` (+ ``seed``): a random fraction of sequences, grouped by ``seq_id`` so the images of
      one sequence never straddle train and validation;
    * ``metadata`` + ``labels``: explicit CSV files.

    ``seed`` is used by ``fraction`` only.
    """

    prefix: str | None = Field(default=None, min_length=1)
    fraction: float | None = Field(default=None, gt=0, lt=1)
    seed: int = 0
    metadata: str | None = Field(default=None, min_length=1)
    labels: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> ValidationConfig:
        if (self.metadata is None) != (self.labels is None):
            missing = "labels" if self.labels is None else "metadata"
            raise ValueError(f"explicit validation files need both metadata and labels; {missing} is missing")
        kinds = self._kinds_set()
        if len(kinds) != 1:
            got = ", ".join(kinds) if kinds else "none"
            raise ValueError(f"set exactly one of prefix, fraction, or metadata+labels (got {got})")
        return self

    def _kinds_set(self) -> list[str]:
        kinds = []
        if self.prefix is not None:
            kinds.append("prefix")
        if self.fraction is not None:
            kinds.append("fraction")
        if self.metadata is not None or self.labels is not None:
            kinds.append("metadata+labels")
        return kinds

    @property
    def kind(self) -> ValidationKind:
        """``"prefix"``, ``"fraction"`` or ``"files"``."""
        if self.prefix is not None:
            return "prefix"
        if self.fraction is not None:
            return "fraction"
        return "files"


class Recipe(ConfigFile):
    """A full training recipe. See ``camtrap/config/recipes/*.yaml`` for annotated examples."""

    kind: ClassVar[str] = "recipe"
    error_class: ClassVar[type[ConfigError]] = RecipeError
    folder: ClassVar[Path] = RECIPES_DIR
    folder_label: ClassVar[str] = "packaged"

    name: str = Field(pattern=SAFE_NAME)
    model: str = Field(min_length=1, description="timm model name")
    pretrained: str | None = Field(
        default=None,
        description='None/"none": random init; "timm": the model\'s default tag; a timm tag '
        '("arch.tag" or "tag"); or a local .pth/.pt/.bin/.safetensors file',
    )
    freeze: Literal["none", "stem", "stem+layer1"] = "none"
    num_classes: int | None = Field(default=None, ge=1, description="None: from the class list")
    classes: Literal["auto", "competition", "labels"] = Field(
        default="auto",
        description='"auto": the labels header\'s classes, in the competition\'s order when they are its 54 '
        'columns; "competition": exactly the 54 Snapshot Serengeti columns (a labels file that lacks one or adds '
        'another is refused, naming them); "labels": the labels header in its own order',
    )
    loss: Literal["multilabel_soft_margin"] = "multilabel_soft_margin"
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    amp: Literal["auto", "fp16", "bf16", "off"] = "auto"
    validation: ValidationConfig
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    stages: list[StageConfig] = Field(min_length=1)
    keep_checkpoints: int = Field(default=3, ge=1)
    seed: int = 666
    inference_long_side: int | None = Field(
        default=None, ge=32, description="None: the last stage's long_side"
    )

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare `off` as False; `amp: off` must mean "off", not a type error.
        return "off" if v is False else v

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        """Check the name against timm's offline registry.

        A typo would otherwise surface only on a worker, after a cluster has started. timm is imported
        here, lazily (seconds), so that modules importing this one stay light.
        """
        import timm

        if not timm.is_model(v):
            close = difflib.get_close_matches(v, timm.list_models(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise PydanticCustomError(
                "unknown_model", "unknown timm model '{m}'{hint}", {"m": v, "hint": hint}
            )
        return v

    @field_validator("pretrained")
    @classmethod
    def _known_pretrained(cls, v: str | None, info) -> str | None:
        """Normalise "none" to None and check a timm tag against the registry (offline)."""
        if v is None:
            return None
        v = v.strip()
        kind = pretrained_kind(v)
        if kind == "none":
            return None
        model = info.data.get("model")
        if kind != "tag" or model is None:
            return v
        import timm
        from timm.models import split_model_name_tag

        arch = split_model_name_tag(model)[0]
        full = pretrained_tag_name(model, v)
        if split_model_name_tag(full)[0] != arch:
            raise PydanticCustomError(
                "pretrained_arch",
                "tag '{p}' is for architecture '{a}', not the model's '{m}'",
                {"p": v, "a": split_model_name_tag(full)[0], "m": arch},
            )
        known = timm.list_pretrained(arch + ".*")
        if full not in known:
            raise PydanticCustomError(
                "unknown_tag",
                "'{p}' is neither a timm pretrained tag of {a} (known: {tags}), 'timm', 'none', "
                "nor a weights file ending in {suffixes}",
                {
                    "p": v,
                    "a": arch,
                    "tags": ", ".join(known) or "none",
                    "suffixes": "/".join(WEIGHT_FILE_SUFFIXES),
                },
            )
        return v

    @field_validator("stages")
    @classmethod
    def _name_stages(cls, stages: list[StageConfig]) -> list[StageConfig]:
        # Default names are filled in here (a stage does not know its index); they name checkpoint folders.
        named = [
            s if s.name is not None else s.model_copy(update={"name": f"stage{i}"})
            for i, s in enumerate(stages)
        ]
        seen: dict[str, int] = {}
        for i, s in enumerate(named):
            if s.name in seen:
                raise ValueError(
                    f"stage name '{s.name}' is used by stages {seen[s.name]} and {i}; names must be unique"
                )
            seen[s.name] = i
        return named

    @property
    def eval_long_side(self) -> int:
        """Long side for validation and inference: ``inference_long_side`` or the last stage's."""
        return self.inference_long_side if self.inference_long_side is not None else self.stages[-1].long_side

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON/YAML types), every setting explicit; unset optional fields are left out."""
        return self.model_dump(mode="json", exclude_none=True)


def pretrained_kind(pretrained: str | None) -> Literal["none", "timm", "file", "tag"]:
    """Classify a ``pretrained`` value: random init, timm's default tag, a local file, or a named tag."""
    if pretrained is None or pretrained.strip().lower() in ("", "none"):
        return "none"
    if pretrained == TIMM_DEFAULT:
        return "timm"
    if pretrained.lower().endswith(WEIGHT_FILE_SUFFIXES):
        return "file"
    return "tag"


def pretrained_tag_name(model: str, tag: str) -> str:
    """Full timm name for a pretrained tag: ``"arch.tag"`` is kept; a bare ``"tag"`` gets the model's arch."""
    if "." in tag:
        return tag
    return f"{model.split('.', 1)[0]}.{tag}"


# --------------------------------------------------------------------------------------------- files


def available_recipes() -> list[str]:
    """Names of the packaged recipes (``camtrap/config/recipes/*.yaml``)."""
    return Recipe.available()


def load_recipe(path_or_name: str | Path) -> Recipe:
    """Read and validate a recipe from a YAML file or a packaged name; :class:`RecipeError` if invalid."""
    return Recipe.load(path_or_name)


def dump_recipe(recipe: Recipe, path: str | Path) -> Path:
    """Write the recipe as YAML (every setting explicit) so a run's outputs say how it was made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe_yaml(recipe), encoding="utf-8")
    return path


def recipe_yaml(recipe: Recipe) -> str:
    """The recipe as YAML text, keys in declaration order."""
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False, default_flow_style=False)


def recipe_changes(old: Any, new: Any, path: str = "") -> list[str]:
    """Every field where two recipe dicts differ, as ``stages.0.lr: 0.003 -> 0.01`` (for refusals)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in dict.fromkeys([*old, *new]):
            out += recipe_changes(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [c for i, (a, b) in enumerate(zip(old, new)) for c in recipe_changes(a, b, f"{path}.{i}")]
    return [] if old == new else [f"{path}: {short_repr(old)} -> {short_repr(new)}"]
