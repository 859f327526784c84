"""Recipes: the packaged files, YAML round trips, overrides, and errors that name the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from camtrap.config.overrides import apply_overrides
from camtrap.config.recipe import (
    Recipe,
    RecipeError,
    StageConfig,
    ValidationConfig,
    available_recipes,
    crop_long_side,
    dump_recipe,
    load_recipe,
    pretrained_kind,
)

TINY = {
    "name": "t",
    "model": "resnet10t",
    "validation": {"fraction": 0.25},
    "stages": [{"long_side": 96, "batch_size": 4, "lr": 0.05, "epochs": 1}],
}


def _write(tmp_path: Path, data: dict, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _tiny(**changes) -> dict:
    data = yaml.safe_load(yaml.safe_dump(TINY))
    data.update(changes)
    return data


def test_packaged_recipes_load() -> None:
    assert {"cpu_tiny", "rx50_swsl", "rx101_wsl"} <= set(available_recipes())
    for name in available_recipes():
        recipe = load_recipe(name)
        assert recipe.name == name


def test_rx50_matches_the_2nd_place_table() -> None:
    r = load_recipe("rx50_swsl")
    assert (r.model, r.pretrained, r.freeze) == (
        "resnext50_32x4d",
        "resnext50_32x4d.fb_swsl_ig1b_ft_in1k",
        "stem+layer1",
    )
    assert (r.optimizer.momentum, r.optimizer.weight_decay, r.seed, r.keep_checkpoints) == (0.9, 1e-4, 666, 3)
    assert r.validation.kind == "prefix" and r.validation.prefix == "S10/"
    table = [(296, 256, 196, 0.005, 30), (360, 320, 64, 0.005, 10), (480, 416, 80, 0.003, 10)]
    got = [
        (s.long_side, crop_long_side(s.long_side, s.crop_ratio), s.batch_size, s.lr, s.epochs)
        for s in r.stages
    ]
    assert got == table
    assert r.stages[2].warmup_epochs == 1
    assert r.eval_long_side == 512  # "resnext50 saw 512x384 inputs"


def test_rx101_matches_the_2nd_place_table() -> None:
    r = load_recipe("rx101_wsl")
    assert (r.model, r.pretrained) == ("resnext101_32x8d", "resnext101_32x8d.fb_wsl_ig1b_ft_in1k")
    got = [
        (s.long_side, crop_long_side(s.long_side, s.crop_ratio), s.batch_size, s.lr, s.epochs)
        for s in r.stages
    ]
    assert got == [(296, 256, 128, 0.005, 30), (360, 320, 50, 0.005, 10)]
    assert r.eval_long_side == 360


def test_cpu_tiny() -> None:
    r = load_recipe("cpu_tiny")
    assert (r.model, r.pretrained, r.freeze, r.amp, r.optimizer.name) == ("resnet10t", None, "none", "auto", "adamw")
    assert r.validation.kind == "fraction" and r.validation.fraction == 0.25
    assert [s.long_side for s in r.stages] == [96, 128]
    assert r.eval_long_side == 128


def test_load_by_path_and_dump_round_trip(tmp_path: Path) -> None:
    for name in available_recipes():
        recipe = load_recipe(name)
        path = dump_recipe(recipe, tmp_path / "out" / f"{name}.yaml")
        assert load_recipe(str(path)) == recipe
        assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_defaults_and_stage_names(tmp_path: Path) -> None:
    data = _tiny()
    data["stages"].append({"name": "big", "long_side": 128, "batch_size": 4, "lr": 0.01, "epochs": 2})
    r = load_recipe(str(_write(tmp_path, data)))
    assert [s.name for s in r.stages] == ["stage0", "big"]
    s0 = r.stages[0]
    assert (s0.crop_ratio, s0.min_lr, s0.warmup_epochs) == (1.14, 0.0, 0.0)
    assert (r.freeze, r.loss, r.amp, r.optimizer.name, r.optimizer.nesterov) == (
        "none",
        "multilabel_soft_margin",
        "auto",
        "sgd",
        False,
    )
    assert (r.pretrained, r.num_classes, r.inference_long_side, r.eval_long_side) == (None, None, None, 128)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "none"),
        ("none", "none"),
        ("timm", "timm"),
        ("/w/best.pth", "file"),
        ("x.safetensors", "file"),
        ("resnet10t.c3_in1k", "tag"),
        ("c3_in1k", "tag"),
    ],
)
def test_pretrained_kinds(tmp_path: Path, value, kind) -> None:
    assert pretrained_kind(value) == kind
    r = Recipe.from_dict(_tiny(pretrained=value))
    assert r.pretrained == (None if kind == "none" else value)


def _error(tmp_path: Path, data: dict) -> tuple[str, str]:
    path = _write(tmp_path, data)
    with pytest.raises(RecipeError) as info:
        load_recipe(str(path))
    return str(info.value), str(path)


def test_typo_key_is_rejected(tmp_path: Path) -> None:
    data = _tiny()
    data["stages"][0]["lrr"] = 0.1
    msg, path = _error(tmp_path, data)
    assert path in msg
    assert "stages.0.lrr: unknown key; did you mean 'lr'?" in msg


def test_negative_lr(tmp_path: Path) -> None:
    data = _tiny()
    data["stages"].append({"long_side": 128, "batch_size": 4, "lr": -0.1, "epochs": 1})
    msg, path = _error(tmp_path, data)
    assert path in msg and "stages.1.lr: Input should be greater than 0 (got -0.1)" in msg


def test_min_lr_above_lr(tmp_path: Path) -> None:
    data = _tiny()
    data["stages"][0]["min_lr"] = 0.5
    msg, path = _error(tmp_path, data)
    assert path in msg and "stages.0.min_lr: min_lr (0.5) must be <= lr (0.05)" in msg


def test_two_validation_kinds(tmp_path: Path) -> None:
    msg, path = _error(tmp_path, _tiny(validation={"prefix": "S10/", "fraction": 0.2}))
    assert (
        path in msg
        and "validation: set exactly one of prefix, fraction, or metadata+labels (got prefix, fraction)"
        in msg
    )


def test_empty_stages(tmp_path: Path) -> None:
    msg, path = _error(tmp_path, _tiny(stages=[]))
    assert path in msg and "stages: List should have at least 1 item" in msg


def test_several_errors_one_line_each(tmp_path: Path) -> None:
    data = _tiny(amp="fp8", freeze="all")
    data["stages"][0]["warmup_epochs"] = 3
    del data["stages"][0]["batch_size"]
    msg, path = _error(tmp_path, data)
    lines = msg.splitlines()
    assert lines[0] == f"{path}: invalid recipe (4 problems):"
    assert any(line.strip().startswith("amp: Input should be") for line in lines)
    assert any(line.strip().startswith("freeze: Input should be") for line in lines)
    assert "  stages.0.batch_size: required field is missing" in lines
    assert "  stages.0.warmup_epochs: warmup_epochs (3.0) must be <= epochs (1)" in lines


def test_other_invalid_values(tmp_path: Path) -> None:
    msg, _ = _error(tmp_path, _tiny(validation={"metadata": "v.csv"}))
    assert "validation: explicit validation files need both metadata and labels; labels is missing" in msg
    msg, _ = _error(tmp_path, _tiny(validation={}))
    assert "(got none)" in msg
    msg, _ = _error(tmp_path, _tiny(model="resnet10tt"))
    assert "model: unknown timm model 'resnet10tt'; did you mean resnet10t" in msg
    msg, _ = _error(tmp_path, _tiny(pretrained="no_such_tag"))
    assert (
        "pretrained: 'no_such_tag' is neither a timm pretrained tag of resnet10t (known: resnet10t.c3_in1k)"
        in msg
    )
    msg, _ = _error(tmp_path, _tiny(pretrained="resnext50_32x4d.fb_swsl_ig1b_ft_in1k"))
    assert (
        "pretrained: tag 'resnext50_32x4d.fb_swsl_ig1b_ft_in1k' is for architecture 'resnext50_32x4d'" in msg
    )
    data = _tiny()
    data["stages"].append(dict(data["stages"][0], name="stage0"))
    msg, _ = _error(tmp_path, data)
    assert "stages: stage name 'stage0' is used by stages 0 and 1" in msg
    data = _tiny()
    data["stages"][0].update(long_side=32, crop_ratio=5.0)
    msg, _ = _error(tmp_path, data)
    assert "stages.0.crop_ratio: crop long side for long_side 32 and crop_ratio 5.0 rounds to 0 px" in msg


def test_yaml_off_means_amp_off(tmp_path: Path) -> None:
    path = tmp_path / "off.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False) + "amp: off\n")
    assert load_recipe(str(path)).amp == "off"


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="no_such_recipe: no such recipe file.*packaged: .*cpu_tiny"):
        load_recipe("no_such_recipe")
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="bad.yaml: not valid YAML"):
        load_recipe(str(bad))
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(RecipeError, match="empty.yaml: the file is empty"):
        load_recipe(str(empty))
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(RecipeError, match="list.yaml: a recipe must be a mapping"):
        load_recipe(str(listing))


def test_overrides() -> None:
    base = load_recipe("cpu_tiny")
    r = apply_overrides(
        base, ["stages.0.lr=0.01", "amp=off", "validation.fraction=0.2", "stages.-1.epochs=1"]
    )
    assert (r.stages[0].lr, r.amp, r.validation.fraction, r.stages[1].epochs) == (0.01, "off", 0.2, 1)
    assert base.stages[0].lr == 0.002  # the original is untouched
    # Switching the kind of validation split clears the other kind.
    r = apply_overrides(base, ["validation.prefix=S2/"])
    assert r.validation.kind == "prefix" and r.validation.fraction is None
    # Unset optional fields can be set; whole sub-objects too.
    r = apply_overrides(base, ["num_classes=54", "inference_long_side=160", "optimizer={momentum: 0.8}"])
    assert (r.num_classes, r.inference_long_side, r.optimizer.momentum, r.optimizer.weight_decay) == (
        54,
        160,
        0.8,
        1e-4,
    )


def test_bad_overrides() -> None:
    base = load_recipe("cpu_tiny")
    with pytest.raises(
        RecipeError, match=r"override 'stages.0.lrr=0.1': unknown key 'lrr' in stages.0; did you mean 'lr'"
    ):
        apply_overrides(base, ["stages.0.lrr=0.1"])
    with pytest.raises(RecipeError, match="unknown key 'ampp' in the recipe"):
        apply_overrides(base, ["ampp=off"])
    with pytest.raises(RecipeError, match="index 5 out of range"):
        apply_overrides(base, ["stages.5.lr=0.1"])
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        apply_overrides(base, ["amp"])
    with pytest.raises(
        RecipeError,
        match=r"recipe 'cpu_tiny' with overrides .*\n  stages.0.lr: Input should be greater than 0",
    ):
        apply_overrides(base, ["stages.0.lr=-1"])
    with pytest.raises(RecipeError, match="'amp' is a value"):
        apply_overrides(base, ["amp.x=1"])


def test_models_are_usable_directly() -> None:
    s = StageConfig(long_side=96, batch_size=2, lr=0.1, epochs=2, warmup_epochs=0.5)
    assert s.name is None and s.crop_ratio == 1.14
    assert ValidationConfig(metadata="m.csv", labels="l.csv").kind == "files"
