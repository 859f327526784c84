"""A Ray Tune sweep (ASHA) of 2-worker TorchTrainer trials on generated data."""

from __future__ import annotations

import pandas as pd
import pytest
from jobs import load_job

from camtrap.config.recipe import load_recipe
from camtrap.config.tune_space import load_tune_space
from camtrap.data.prepare import PrepareSettings, prepare_images
from camtrap.demo import SMALL_SIZES, make_demo_dataset

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def data(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    make_demo_dataset(root / "data", num_sequences=80, seed=5, image_sizes=SMALL_SIZES)
    prepare_images(str(root / "data" / "train_metadata.csv"), str(root / "data" / "images"), str(root / "prepared"),
                   PrepareSettings(long_side=128))
    return root


def test_sweep_runs_every_trial_and_writes_a_usable_best_recipe(data, capsys):
    space = load_tune_space("cpu_smoke")
    out = data / "sweep"
    argv = ["--space", "cpu_smoke", "--recipe", "cpu_tiny",
            "--metadata", str(data / "data" / "train_metadata.csv"), "--labels", str(data / "data" / "train_labels.csv"),
            "--images-dir", str(data / "prepared"), "--out", str(out), "--num-samples", "3"]
    assert load_job("tune").main(argv) == 0
    printed = capsys.readouterr().out
    assert "tune: 3 trials" in printed
    # One line per trial event instead of Tune's boxes and status tables.
    assert printed.count(" started: ") == 3 and printed.count("trials done") == 3, printed
    assert "Trial status" not in printed and "Configuration for experiment" not in printed, printed
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 3
    assert set(results["status"]) <= {"completed", "stopped_early"}
    assert {f"param_{p}" for p in space.parameters} <= set(results.columns)
    assert results[f"best_{space.metric}"].notna().all()
    assert (results["epochs"] >= 1).all()
    best = load_recipe(str(out / "best_recipe.yaml"))  # what train.py --recipe does first
    row = results.loc[results[f"best_{space.metric}"].idxmin()]
    first = best.stages[0]
    assert first.lr == pytest.approx(row["param_lr"])
    assert first.crop_ratio == pytest.approx(row["param_crop_ratio"])
    assert len(best.stages) == len(load_recipe("cpu_tiny").stages)  # the full recipe, not the trial budget
    # Rerunning the same command finds the finished sweep and adds no trials.
    assert load_job("tune").main(argv) == 0
    assert len(pd.read_csv(out / "results.csv")) == 3


def test_failed_trial_is_reported_with_its_error_and_the_sweep_goes_on(ray_session, tmp_path):
    from ray import tune

    from camtrap.tune.sweep import summarize_sweep

    # Defined here so that cloudpickle ships it by value (the test module is not importable in workers).
    def _fake_trial(config: dict) -> None:
        """A real Tune trial without training: reports a metric per epoch, or raises like a CUDA OOM would."""
        from ray import tune

        if config["lr"] > 0.005:
            raise RuntimeError(f"CUDA out of memory at lr={config['lr']}")
        for epoch in range(2):
            tune.report({"val_metric": config["lr"] * 10 - epoch * 0.001})

    space = load_tune_space("cpu_smoke")
    recipe = load_recipe("cpu_tiny")
    grid = tune.Tuner(
        tune.with_resources(_fake_trial, {"CPU": 0.05}),
        param_space={"lr": tune.grid_search([0.001, 0.009, 0.002]), "warmup_epochs": 0.5, "crop_ratio": 1.15},
        tune_config=tune.TuneConfig(metric="val_metric", mode="min"),
        run_config=tune.RunConfig(name="fake", storage_path=str(tmp_path / "ray"),
                                  failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
    ).fit()
    summary = summarize_sweep(grid, space, recipe, str(tmp_path))
    results = pd.read_csv(tmp_path / "results.csv").sort_values("param_lr").reset_index(drop=True)
    assert list(results["param_lr"]) == [0.001, 0.002, 0.009]
    assert list(results["status"]) == ["completed", "completed", "failed"]
    assert "CUDA out of memory at lr=0.009" in results.loc[2, "error"]
    assert results.loc[0, "best_val_metric"] == pytest.approx(0.009)
    assert (summary.trials, summary.completed, summary.stopped_early, summary.failed) == (3, 2, 0, 1)
    assert summary.best_params["lr"] == pytest.approx(0.001)
    assert "1 failed" in str(summary)
    assert load_recipe(str(tmp_path / "best_recipe.yaml")).stages[0].lr == pytest.approx(0.001)


def test_invalid_space_is_refused_naming_the_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nparameters:\n  lr: {distribution: loguniform, low: 0, high: 0.1}\n")
    argv = ["--space", str(bad), "--recipe", "cpu_tiny", "--metadata", "m.csv", "--labels", "l.csv",
            "--images-dir", "d", "--out", str(tmp_path / "out")]
    assert load_job("tune").main(argv) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "parameters.lr" in err
    assert not (tmp_path / "out").exists()
