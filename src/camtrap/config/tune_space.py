"""Ray Tune search spaces: pydantic models, YAML in, Ray Tune domains and per-trial recipes out.

A search space says which recipe settings a tuning run samples (``lr``, ``min_lr``, ``warmup_epochs``,
``crop_ratio``, ``batch_size`` per stage; ``weight_decay`` of the optimizer), from which distribution,
on which stages, and how much each trial trains (``budget``: a subset of the recipe's stages, usually the
first, with fewer epochs). :func:`trial_recipe` turns a base recipe plus one trial's sampled values into
the recipe that trial trains; :func:`to_ray_search_space` gives the ``param_space`` for ``ray.tune``.

As for recipes, every model forbids unknown keys and an invalid file raises
:class:`TuneSpaceError` whose message names the file and gives one line per problem, each
starting with the field path (``parameters.lr.low``); the lines come from :mod:`camtrap.config.errors`.

Shipped spaces live in the repository's top-level ``tune_spaces/<name>.yaml``; :func:`load_tune_space`
takes either a path or such a bare name.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from camtrap.config.base import SAFE_NAME, ConfigFile, StrictModel
from camtrap.config.errors import ConfigError
from camtrap.config.recipe import Recipe

#: Folder of the shipped search spaces (``load_tune_space("cpu_smoke")``), at the repository's top level.
TUNE_SPACES_DIR = Path(__file__).resolve().parents[3] / "tune_spaces"

#: Tunable per-stage fields of :class:`camtrap.config.recipe.StageConfig`.
STAGE_PARAMETERS: tuple[str, ...] = ("lr", "min_lr", "warmup_epochs", "crop_ratio", "batch_size")
#: Tunable fields of :class:`camtrap.config.recipe.OptimizerConfig` (one value for the whole recipe).
OPTIMIZER_PARAMETERS: tuple[str, ...] = ("weight_decay",)
#: Every allowed key of ``parameters``.
ALLOWED_PARAMETERS: tuple[str, ...] = STAGE_PARAMETERS + OPTIMIZER_PARAMETERS

Distribution = Literal["loguniform", "uniform", "quniform", "choice"]
_CONTINUOUS = ("loguniform", "uniform", "quniform")

#: A stage named as in the recipe (``s296``) or by its index in ``recipe.stages`` (``0``, ``-1``).
StageRef = int | str


class TuneSpaceError(ConfigError):
    """A tune-space file is invalid, or does not fit the recipe it is applied to."""


def _finite(v: float | None) -> float | None:
    if v is not None and not math.isfinite(v):
        raise ValueError(f"must be a finite number (got {v})")
    return v


def _check_bound(v: float | None, info) -> str | None:
    """What ``low`` and ``high`` share: finite, required by continuous distributions, unused by
    ``choice``. Returns the distribution for the bound's own checks."""
    _finite(v)
    dist = info.data.get("distribution")
    if dist in _CONTINUOUS and v is None:
        raise ValueError(f"required for distribution '{dist}'")
    if dist == "choice" and v is not None:
        raise ValueError("not used by distribution 'choice' (list the options in values)")
    return dist


def _one_stage_as_list(v: Any) -> Any:
    """``stages: s296`` / ``stages: 0`` mean ``[s296]`` / ``[0]`` (``"all"`` stays as it is)."""
    if isinstance(v, (str, int)) and v != "all":
        return [v]
    return v


class ParamSpec(StrictModel):
    """One sampled setting: a distribution and the stages it applies to.

    ``loguniform`` / ``uniform`` need ``low < high`` (``low > 0`` for loguniform); ``quniform`` also
    needs ``q`` (values are rounded to multiples of it); ``choice`` needs a non-empty ``values`` list and
    takes none of ``low``/``high``/``q``. Field order matters: ``distribution`` and ``low`` come before the
    fields checked against them, so each error points at the field to edit.
    """

    distribution: Distribution
    low: float | None = Field(default=None, validate_default=True)
    high: float | None = Field(default=None, validate_default=True)
    q: float | None = Field(default=None, validate_default=True, description="quniform's step")
    values: list[Any] | None = Field(default=None, validate_default=True, description="choice's options")
    stages: Literal["all"] | list[StageRef] = Field(
        default="all", description='"all", or stage names / indices of the recipe'
    )

    @field_validator("low")
    @classmethod
    def _check_low(cls, v: float | None, info) -> float | None:
        dist = _check_bound(v, info)
        if dist == "loguniform" and v is not None and v <= 0:
            raise ValueError(f"must be > 0 for distribution 'loguniform' (got {v})")
        return v

    @field_validator("high")
    @classmethod
    def _check_high(cls, v: float | None, info) -> float | None:
        _check_bound(v, info)
        low = info.data.get("low")
        if v is not None and low is not None and not low < v:
            raise ValueError(f"must be > low ({low}) (got {v})")
        return v

    @field_validator("q")
    @classmethod
    def _check_q(cls, v: float | None, info) -> float | None:
        _finite(v)
        dist = info.data.get("distribution")
        if dist == "quniform" and v is None:
            raise ValueError("required for distribution 'quniform' (the rounding step)")
        if dist is not None and dist != "quniform" and v is not None:
            raise ValueError(f"used by distribution 'quniform' only, not '{dist}'")
        if v is not None and v <= 0:
            raise ValueError(f"must be > 0 (got {v})")
        return v

    @field_validator("values")
    @classmethod
    def _check_values(cls, v: list[Any] | None, info) -> list[Any] | None:
        dist = info.data.get("distribution")
        if dist == "choice" and not v:
            raise ValueError("distribution 'choice' needs a non-empty list of values")
        if dist is not None and dist != "choice" and v is not None:
            raise ValueError(f"used by distribution 'choice' only, not '{dist}' (use low/high)")
        return v

    _one_stage = field_validator("stages", mode="before")(_one_stage_as_list)

    @field_validator("stages")
    @classmethod
    def _stages_not_empty(cls, v: Literal["all"] | list[StageRef]) -> Literal["all"] | list[StageRef]:
        if isinstance(v, list) and not v:
            raise ValueError('an empty list applies the parameter nowhere; use "all" or name stages')
        return v


class SchedulerConfig(StrictModel):
    """Trial scheduler: ASHA early stopping (per reported epoch) or none (every trial runs its budget)."""

    type: Literal["asha", "none"] = "asha"
    grace_period: int = Field(default=1, ge=1, description="epochs before a trial may be stopped")
    reduction_factor: float = Field(default=2.0, gt=1)
    max_t: int | None = Field(default=None, ge=1, description="None: total epochs of the trial budget")

    @field_validator("max_t")
    @classmethod
    def _max_t_covers_grace(cls, v: int | None, info) -> int | None:
        grace = info.data.get("grace_period")
        if v is not None and grace is not None and v < grace:
            raise ValueError(f"max_t ({v}) must be >= grace_period ({grace})")
        return v


class SearchConfig(StrictModel):
    """Search algorithm: random sampling (Ray Tune's default variant generator)."""

    algorithm: Literal["random"] = "random"
    seed: int | None = None


class BudgetConfig(StrictModel):
    """What one trial trains: a subset of the recipe's stages (in recipe order), optionally shortened."""

    stages: list[StageRef] = Field(default_factory=lambda: [0], min_length=1, description="default: first")
    epochs: int | None = Field(default=None, ge=1, description="per trained stage; None: the recipe's")

    _one_stage = field_validator("stages", mode="before")(_one_stage_as_list)


class ResourcesConfig(StrictModel):
    """Per-trial Ray Train workers."""

    num_workers: int = Field(default=2, ge=1)
    cpus_per_worker: float | None = Field(default=None, gt=0, description="None: automatic")
    use_gpu: bool = False


class TuneSpace(ConfigFile):
    """A Ray Tune search space over recipe settings. See ``tune_spaces/*.yaml`` for annotated examples."""

    kind: ClassVar[str] = "tune space"
    error_class: ClassVar[type[ConfigError]] = TuneSpaceError
    folder: ClassVar[Path] = TUNE_SPACES_DIR

    name: str = Field(pattern=SAFE_NAME)
    parameters: dict[str, ParamSpec] = Field(min_length=1)
    metric: str = Field(default="val_metric", min_length=1)
    mode: Literal["min", "max"] = "min"
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    num_samples: int = Field(default=8, ge=1)
    max_concurrent: int = Field(default=1, ge=1)

    @field_validator("parameters", mode="before")
    @classmethod
    def _known_names(cls, v: Any) -> Any:
        if isinstance(v, dict):
            for name in v:
                if name not in ALLOWED_PARAMETERS:
                    close = difflib.get_close_matches(str(name), ALLOWED_PARAMETERS, n=1)
                    hint = f"; did you mean '{close[0]}'?" if close else ""
                    raise ValueError(
                        f"unknown parameter '{name}'{hint} (allowed: {', '.join(ALLOWED_PARAMETERS)})"
                    )
        return v

    @field_validator("parameters")
    @classmethod
    def _optimizer_params_apply_everywhere(cls, v: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        for name in OPTIMIZER_PARAMETERS:
            if name in v and v[name].stages != "all":
                raise ValueError(
                    f"{name} is an optimizer setting, one value for every stage; drop its stages list"
                )
        return v

    @classmethod
    def error_root(cls) -> type[BaseModel]:
        return _ErrorShape


# The recipe formatter finds the model under an error's path to list allowed keys; ``parameters`` is a
# dict, so for that lookup only it is described as a model with one optional field per allowed name.
_ParametersShape = create_model(
    "_ParametersShape",
    __config__=ConfigDict(extra="forbid"),
    **{name: (ParamSpec | None, None) for name in ALLOWED_PARAMETERS},
)
_ErrorShape = create_model("_ErrorShape", __base__=TuneSpace, parameters=(_ParametersShape, ...))


# --------------------------------------------------------------------------------------------- files


def available_tune_spaces() -> list[str]:
    """Names of the shipped search spaces (``tune_spaces/*.yaml``)."""
    return TuneSpace.available()


def load_tune_space(path_or_name: str | Path) -> TuneSpace:
    """Read and validate a search space from a YAML file or a shipped name; :class:`TuneSpaceError` if invalid."""
    return TuneSpace.load(path_or_name)


# --------------------------------------------------------------------------------------------- Ray Tune


def to_ray_search_space(space: TuneSpace) -> dict[str, Any]:
    """``{parameter: ray.tune domain}`` for ``Tuner(param_space=...)``; ray.tune is imported here, lazily."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, p in space.parameters.items():
        if p.distribution == "loguniform":
            out[name] = tune.loguniform(p.low, p.high)
        elif p.distribution == "uniform":
            out[name] = tune.uniform(p.low, p.high)
        elif p.distribution == "quniform":
            out[name] = tune.quniform(p.low, p.high, p.q)
        else:
            out[name] = tune.choice(list(p.values))
    return out


# --------------------------------------------------------------------------------------------- recipes


def _stage_indices(recipe: Recipe, refs: Literal["all"] | list[StageRef], where: str) -> list[int]:
    """Indices into ``recipe.stages`` (sorted, unique) for stage names / indices; TuneSpaceError if unknown."""
    n = len(recipe.stages)
    if refs == "all":
        return list(range(n))
    names = [s.name for s in recipe.stages]
    found: set[int] = set()
    for ref in refs:
        if isinstance(ref, int):
            if not -n <= ref < n:
                raise TuneSpaceError(
                    f"{where}: stage index {ref} out of range (recipe '{recipe.name}' has {n} stages)"
                )
            found.add(ref % n)
        elif ref in names:
            found.add(names.index(ref))
        else:
            close = difflib.get_close_matches(ref, [str(x) for x in names], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise TuneSpaceError(
                f"{where}: unknown stage '{ref}'{hint} (recipe '{recipe.name}' has stages: {', '.join(names)})"
            )
    return sorted(found)


def validate_against_recipe(space: TuneSpace, recipe: Recipe) -> None:
    """TuneSpaceError if a parameter's ``stages`` or ``budget.stages`` name a stage the recipe lacks."""
    for name, p in space.parameters.items():
        _stage_indices(recipe, p.stages, f"tune space '{space.name}': parameters.{name}.stages")
    _stage_indices(recipe, space.budget.stages, f"tune space '{space.name}': budget.stages")


def _as_value(name: str, value: Any) -> Any:
    if name == "batch_size":
        try:
            return round(float(value))
        except (TypeError, ValueError):
            raise TuneSpaceError(f"parameter batch_size: expected a number, got {value!r}") from None
    return value


def apply_params(recipe: Recipe, space: TuneSpace, params: dict[str, Any]) -> Recipe:
    """A new, re-validated recipe with one trial's sampled values set.

    ``params`` holds exactly the space's parameters (a trial's config). Stage settings go on the stages
    each parameter applies to; ``weight_decay`` goes on ``recipe.optimizer``; ``batch_size`` is rounded
    to an int (``quniform`` samples floats). Unknown or missing keys, unknown stages, or values the recipe
    rejects (``min_lr`` above ``lr``, ...) raise :class:`TuneSpaceError` / :class:`RecipeError`.
    """
    extra = sorted(set(params) - set(space.parameters))
    missing = sorted(set(space.parameters) - set(params))
    if extra or missing:
        parts = []
        if extra:
            parts.append(f"not in the space: {', '.join(extra)}")
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        raise TuneSpaceError(
            f"tune space '{space.name}': params do not match its parameters ({'; '.join(parts)})"
        )
    data = recipe.model_dump(mode="python")
    for name, p in space.parameters.items():
        value = _as_value(name, params[name])
        if name in OPTIMIZER_PARAMETERS:
            data["optimizer"][name] = value
            continue
        for i in _stage_indices(recipe, p.stages, f"tune space '{space.name}': parameters.{name}.stages"):
            data["stages"][i][name] = value
    return Recipe.from_dict(data, source=f"recipe '{recipe.name}' with tune parameters {params}")


def trial_recipe(recipe: Recipe, space: TuneSpace, params: dict[str, Any]) -> Recipe:
    """The recipe one trial trains: :func:`apply_params`, then only ``budget.stages`` (in recipe order),
    each with ``budget.epochs`` epochs when set."""
    validate_against_recipe(space, recipe)
    tuned = apply_params(recipe, space, params)
    keep = _stage_indices(tuned, space.budget.stages, f"tune space '{space.name}': budget.stages")
    data = tuned.model_dump(mode="python")
    data["stages"] = [data["stages"][i] for i in keep]
    if space.budget.epochs is not None:
        for stage in data["stages"]:
            stage["epochs"] = space.budget.epochs
    source = f"recipe '{recipe.name}' for a trial of tune space '{space.name}' with {params}"
    return Recipe.from_dict(data, source=source)


def trial_epochs(space: TuneSpace, recipe: Recipe) -> int:
    """Total epochs one trial trains (summed over the budget's stages): the default ``scheduler.max_t``."""
    keep = _stage_indices(recipe, space.budget.stages, f"tune space '{space.name}': budget.stages")
    if space.budget.epochs is not None:
        return space.budget.epochs * len(keep)
    return sum(recipe.stages[i].epochs for i in keep)


def scheduler_max_t(space: TuneSpace, recipe: Recipe) -> int:
    """``scheduler.max_t``, or when unset the trial budget's total epochs."""
    return space.scheduler.max_t if space.scheduler.max_t is not None else trial_epochs(space, recipe)
