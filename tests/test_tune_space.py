"""Tune search spaces: the shipped files, Ray Tune domains, per-trial recipes, errors naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from camtrap.config.errors import ConfigError
from camtrap.config.recipe import Recipe, load_recipe
from camtrap.config.tune_space import (
    ALLOWED_PARAMETERS,
    TUNE_SPACES_DIR,
    TuneSpace,
    apply_params,
    available_tune_spaces,
    load_tune_space,
    scheduler_max_t,
    to_ray_search_space,
    trial_epochs,
    trial_recipe,
    validate_against_recipe,
)

MINI = {
    "name": "mini",
    "parameters": {"lr": {"distribution": "loguniform", "low": 0.001, "high": 0.01}},
}


@pytest.fixture(scope="module")
def rx50() -> Recipe:
    return load_recipe("rx50_swsl")


@pytest.fixture(scope="module")
def tiny() -> Recipe:
    return load_recipe("cpu_tiny")


def _write(tmp_path: Path, data: dict, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _mini(**changes) -> dict:
    data = yaml.safe_load(yaml.safe_dump(MINI))
    data.update(changes)
    return data


def _load_error(tmp_path: Path, data: dict) -> str:
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_tune_space(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: invalid tune space ("), msg
    return msg


# ------------------------------------------------------------------------------------------ shipped files


def test_shipped_spaces_load() -> None:
    assert TUNE_SPACES_DIR == Path(__file__).resolve().parents[1] / "tune_spaces"
    assert {"warmup_cosine", "cpu_smoke"} <= set(available_tune_spaces())
    for name in available_tune_spaces():
        space = load_tune_space(name)
        assert space.name == name
        assert load_tune_space(TUNE_SPACES_DIR / f"{name}.yaml") == space
        # trials receive the space as plain data (tune.with_parameters) and validate it again
        assert TuneSpace.model_validate(space.model_dump(mode="json")) == space


def test_warmup_cosine_settings(rx50: Recipe) -> None:
    s = load_tune_space("warmup_cosine")
    assert set(s.parameters) == {"lr", "warmup_epochs", "min_lr", "crop_ratio"}
    lr, wu, mlr, crop = (s.parameters[k] for k in ("lr", "warmup_epochs", "min_lr", "crop_ratio"))
    assert (lr.distribution, lr.low, lr.high) == ("loguniform", 0.002, 0.012)
    assert lr.low < rx50.stages[0].lr < lr.high
    assert (wu.distribution, wu.low, wu.high) == ("uniform", 0.0, 2.0)
    assert wu.low < rx50.stages[0].warmup_epochs < wu.high
    assert (mlr.distribution, mlr.low, mlr.high) == ("loguniform", 1e-6, 1e-4)
    assert (crop.distribution, crop.low, crop.high) == ("uniform", 1.05, 1.25)
    assert crop.low < rx50.stages[0].crop_ratio < crop.high
    assert s.budget.stages == [rx50.stages[0].name] and s.budget.epochs == 6
    assert (s.scheduler.type, s.scheduler.grace_period, s.scheduler.reduction_factor) == ("asha", 1, 2.0)
    assert (s.num_samples, s.max_concurrent) == (16, 2)
    assert (s.resources.num_workers, s.resources.use_gpu) == (8, True)
    assert (s.metric, s.mode) == ("val_metric", "min")
    validate_against_recipe(s, rx50)
    assert trial_epochs(s, rx50) == 6 and scheduler_max_t(s, rx50) == 6


def test_cpu_smoke_settings(tiny: Recipe) -> None:
    s = load_tune_space("cpu_smoke")
    assert set(s.parameters) == {"lr", "warmup_epochs", "crop_ratio"}
    assert (s.parameters["lr"].distribution, s.parameters["lr"].low, s.parameters["lr"].high) == (
        "loguniform",
        1e-3,
        6e-3,
    )
    assert (s.parameters["warmup_epochs"].low, s.parameters["warmup_epochs"].high) == (0.0, 1.0)
    assert (s.parameters["crop_ratio"].low, s.parameters["crop_ratio"].high) == (1.1, 1.2)
    assert s.budget.stages == [tiny.stages[0].name] and s.budget.epochs == 2
    assert (s.scheduler.type, s.scheduler.grace_period) == ("asha", 1)
    assert (s.num_samples, s.max_concurrent) == (3, 1)
    assert (s.resources.num_workers, s.resources.use_gpu) == (2, False)
    validate_against_recipe(s, tiny)
    assert scheduler_max_t(s, tiny) == 2


@pytest.mark.parametrize("space_name", ["warmup_cosine", "cpu_smoke"])
def test_to_ray_search_space_gives_domains(space_name: str) -> None:
    from ray.tune.search.sample import Domain, Float

    space = load_tune_space(space_name)
    ray_space = to_ray_search_space(space)
    assert set(ray_space) == set(space.parameters)
    for name, domain in ray_space.items():
        assert isinstance(domain, Domain) and isinstance(domain, Float)
        p = space.parameters[name]
        assert (domain.lower, domain.upper) == (p.low, p.high)
        values = [domain.sample() for _ in range(20)]
        assert all(p.low <= v <= p.high for v in values)


def test_to_ray_search_space_all_distributions() -> None:
    from ray.tune.search.sample import Categorical, Domain, Float, LogUniform, Quantized

    space = TuneSpace.model_validate(
        {
            "name": "all",
            "parameters": {
                "lr": {"distribution": "loguniform", "low": 1e-3, "high": 1e-2},
                "crop_ratio": {"distribution": "uniform", "low": 1.1, "high": 1.2},
                "batch_size": {"distribution": "quniform", "low": 8, "high": 32, "q": 8},
                "weight_decay": {"distribution": "choice", "values": [0.0, 1e-4, 1e-3]},
            },
        }
    )
    d = to_ray_search_space(space)
    assert all(isinstance(v, Domain) for v in d.values())
    assert isinstance(d["lr"].get_sampler(), LogUniform)
    assert isinstance(d["crop_ratio"], Float)
    assert isinstance(d["batch_size"].get_sampler(), Quantized)
    assert all(float(v) % 8 == 0 for v in d["batch_size"].sample(size=10))
    assert isinstance(d["weight_decay"], Categorical) and d["weight_decay"].categories == [0.0, 1e-4, 1e-3]


# ------------------------------------------------------------------------------------------ trial recipes


def test_trial_recipe_warmup_cosine(rx50: Recipe) -> None:
    space = load_tune_space("warmup_cosine")
    params = {"lr": 0.008, "warmup_epochs": 1.5, "min_lr": 3e-5, "crop_ratio": 1.2}
    t = trial_recipe(rx50, space, params)
    assert [s.name for s in t.stages] == ["s296"]  # the other stages are dropped
    s = t.stages[0]
    assert (s.lr, s.warmup_epochs, s.min_lr, s.crop_ratio, s.epochs) == (0.008, 1.5, 3e-5, 1.2, 6)
    assert (s.long_side, s.batch_size) == (296, 196)  # untouched settings stay
    assert t.optimizer == rx50.optimizer and t.model == rx50.model
    assert [x.epochs for x in rx50.stages] == [30, 10, 10]  # the input is not modified

    # apply_params alone: every stage gets the "all" parameters, only s296 gets warmup_epochs
    full = apply_params(rx50, space, params)
    assert [x.lr for x in full.stages] == [0.008] * 3
    assert [x.min_lr for x in full.stages] == [3e-5] * 3
    assert [x.crop_ratio for x in full.stages] == [1.2] * 3
    assert [x.warmup_epochs for x in full.stages] == [1.5, 0.0, 1.0]
    assert [x.epochs for x in full.stages] == [30, 10, 10]


def test_trial_recipe_cpu_smoke(tiny: Recipe) -> None:
    space = load_tune_space("cpu_smoke")
    t = trial_recipe(tiny, space, {"lr": 0.004, "warmup_epochs": 0.25, "crop_ratio": 1.15})
    assert [s.name for s in t.stages] == ["s96"]
    s = t.stages[0]
    assert (s.lr, s.warmup_epochs, s.crop_ratio, s.epochs) == (0.004, 0.25, 1.15, 2)
    assert (s.min_lr, s.batch_size, s.long_side) == (tiny.stages[0].min_lr, 8, 96)


def test_trial_recipe_with_sampled_values(tiny: Recipe) -> None:
    space = load_tune_space("cpu_smoke")
    ray_space = to_ray_search_space(space)
    for _ in range(5):
        params = {k: d.sample() for k, d in ray_space.items()}
        t = trial_recipe(tiny, space, params)
        assert t.stages[0].lr == params["lr"] and t.stages[0].epochs == 2


def test_stage_indices_weight_decay_and_batch_size(rx50: Recipe) -> None:
    space = TuneSpace.model_validate(
        {
            "name": "idx",
            "parameters": {
                "batch_size": {"distribution": "quniform", "low": 16, "high": 64, "q": 16, "stages": [1, -1]},
                "weight_decay": {"distribution": "loguniform", "low": 1e-5, "high": 1e-3},
            },
            "budget": {"stages": ["s480", 1]},
        }
    )
    t = trial_recipe(rx50, space, {"batch_size": 47.9999, "weight_decay": 5e-4})
    assert [s.name for s in t.stages] == ["s360", "s480"]  # recipe order, not budget order
    assert [s.batch_size for s in t.stages] == [48, 48]
    assert all(isinstance(s.batch_size, int) for s in t.stages)
    assert [s.epochs for s in t.stages] == [10, 10]  # budget.epochs unset: the recipe's
    assert t.optimizer.weight_decay == 5e-4
    assert trial_epochs(space, rx50) == 20 and scheduler_max_t(space, rx50) == 20


def test_apply_params_rejects_mismatched_or_invalid_values(rx50: Recipe) -> None:
    space = load_tune_space("warmup_cosine")
    good = {"lr": 0.008, "warmup_epochs": 1.5, "min_lr": 3e-5, "crop_ratio": 1.2}
    with pytest.raises(ConfigError, match="not in the space: momentum"):
        apply_params(rx50, space, {**good, "momentum": 0.5})
    with pytest.raises(ConfigError, match="missing: min_lr"):
        apply_params(rx50, space, {k: v for k, v in good.items() if k != "min_lr"})
    with pytest.raises(ConfigError, match=r"stages\.0\.min_lr: min_lr \(0\.1\) must be <= lr"):
        apply_params(rx50, space, {**good, "min_lr": 0.1})


# ------------------------------------------------------------------------------------------ errors


def test_unknown_parameter_name(tmp_path: Path) -> None:
    data = _mini(parameters={"lrr": {"distribution": "uniform", "low": 0.1, "high": 0.2}})
    msg = _load_error(tmp_path, data)
    assert "parameters: unknown parameter 'lrr'; did you mean 'lr'?" in msg
    assert f"(allowed: {', '.join(ALLOWED_PARAMETERS)})" in msg


def test_loguniform_low_not_positive(tmp_path: Path) -> None:
    for low in (0, -1e-3):
        data = _mini(parameters={"lr": {"distribution": "loguniform", "low": low, "high": 0.01}})
        msg = _load_error(tmp_path, data)
        assert "parameters.lr.low: must be > 0 for distribution 'loguniform'" in msg


def test_low_not_below_high(tmp_path: Path) -> None:
    for high in (0.01, 0.005):
        data = _mini(parameters={"lr": {"distribution": "uniform", "low": 0.01, "high": high}})
        msg = _load_error(tmp_path, data)
        assert f"parameters.lr.high: must be > low (0.01) (got {high})" in msg


def test_continuous_needs_bounds_and_quniform_needs_q(tmp_path: Path) -> None:
    msg = _load_error(tmp_path, _mini(parameters={"lr": {"distribution": "uniform", "high": 0.01}}))
    assert "parameters.lr.low: required for distribution 'uniform'" in msg
    msg = _load_error(
        tmp_path, _mini(parameters={"batch_size": {"distribution": "quniform", "low": 8, "high": 32}})
    )
    assert "parameters.batch_size.q: required for distribution 'quniform'" in msg


def test_choice_without_values(tmp_path: Path) -> None:
    msg = _load_error(tmp_path, _mini(parameters={"batch_size": {"distribution": "choice"}}))
    assert "parameters.batch_size.values: distribution 'choice' needs a non-empty list of values" in msg
    msg = _load_error(tmp_path, _mini(parameters={"batch_size": {"distribution": "choice", "values": []}}))
    assert "parameters.batch_size.values:" in msg
    msg = _load_error(
        tmp_path,
        _mini(parameters={"batch_size": {"distribution": "choice", "values": [8], "low": 1}}),
    )
    assert "parameters.batch_size.low: not used by distribution 'choice'" in msg


def test_unknown_key_typo(tmp_path: Path) -> None:
    msg = _load_error(tmp_path, _mini(num_sample=4))
    assert "num_sample: unknown key; did you mean 'num_samples'?" in msg
    data = _mini(parameters={"lr": {"distribution": "loguniform", "lwo": 0.001, "high": 0.01}})
    msg = _load_error(tmp_path, data)
    assert "parameters.lr.lwo: unknown key; did you mean 'low'? (allowed: distribution, high, low," in msg
    msg = _load_error(tmp_path, _mini(scheduler={"grace_periods": 2}))
    assert "scheduler.grace_periods: unknown key; did you mean 'grace_period'?" in msg


def test_unknown_stage_name_via_trial_recipe(tmp_path: Path, rx50: Recipe) -> None:
    data = _mini(
        parameters={"lr": {"distribution": "loguniform", "low": 1e-3, "high": 1e-2, "stages": ["s300"]}}
    )
    space = load_tune_space(_write(tmp_path, data))
    with pytest.raises(ConfigError) as info:
        trial_recipe(rx50, space, {"lr": 0.005})
    msg = str(info.value)
    assert "parameters.lr.stages: unknown stage 's300'" in msg
    assert "recipe 'rx50_swsl' has stages: s296, s360, s480" in msg

    space = load_tune_space(_write(tmp_path, _mini(budget={"stages": ["s999"]})))
    with pytest.raises(ConfigError, match=r"budget\.stages: unknown stage 's999'"):
        trial_recipe(rx50, space, {"lr": 0.005})
    space = load_tune_space(_write(tmp_path, _mini(budget={"stages": [3]})))
    with pytest.raises(ConfigError, match=r"budget\.stages: stage index 3 out of range"):
        trial_recipe(rx50, space, {"lr": 0.005})


def test_max_concurrent_zero(tmp_path: Path) -> None:
    msg = _load_error(tmp_path, _mini(max_concurrent=0))
    assert "max_concurrent: Input should be greater than or equal to 1 (got 0)" in msg


def test_other_errors(tmp_path: Path) -> None:
    msg = _load_error(tmp_path, _mini(parameters={}))
    assert "parameters:" in msg
    msg = _load_error(tmp_path, _mini(scheduler={"reduction_factor": 1}))
    assert "scheduler.reduction_factor:" in msg
    data = _mini(
        parameters={"weight_decay": {"distribution": "uniform", "low": 0, "high": 1e-3, "stages": [0]}}
    )
    assert "weight_decay is an optimizer setting" in _load_error(tmp_path, data)
    msg = _load_error(tmp_path, {"parameters": MINI["parameters"]})
    assert "name: required field is missing" in msg
    # several problems: one line each
    msg = _load_error(tmp_path, _mini(max_concurrent=0, num_samples=0))
    assert "(2 problems)" in msg and "num_samples:" in msg and "max_concurrent:" in msg


def test_missing_empty_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tune space file not found"):
        load_tune_space(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not a shipped name.*shipped: .*cpu_smoke"):
        load_tune_space("no_such_space")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_tune_space(empty)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_tune_space(listed)


def test_single_stage_without_list_and_max_t(tmp_path: Path, tiny: Recipe) -> None:
    data = _mini(budget={"stages": "s128", "epochs": 1})
    data["parameters"]["lr"]["stages"] = 1
    space = load_tune_space(_write(tmp_path, data))
    assert space.budget.stages == ["s128"] and space.parameters["lr"].stages == [1]
    t = trial_recipe(tiny, space, {"lr": 0.0015})
    assert [(s.name, s.lr, s.epochs) for s in t.stages] == [("s128", 0.0015, 1)]
    msg = _load_error(tmp_path, _mini(scheduler={"grace_period": 3, "max_t": 2}))
    assert "scheduler.max_t: max_t (2) must be >= grace_period (3)" in msg
