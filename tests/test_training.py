"""Progressive-stage DDP training on Ray Train: learning, freezing, outputs, resume."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from camtrap.config.overrides import apply_overrides
from camtrap.config.recipe import load_recipe
from camtrap.data.prepare import PrepareSettings, prepare_images
from camtrap.demo import SMALL_SIZES, make_demo_dataset
from camtrap.model_file import read_state_file
from camtrap.train.batches import pad_batch
from camtrap.train.driver import run_training
from camtrap.train.loop import resolve_amp
from camtrap.train.models import create_classifier

pytestmark = pytest.mark.timeout(900)

OVERRIDES = ["validation.fraction=0.3"]
SPECIES = ("zebra", "elephant", "giraffe")


@pytest.fixture(scope="module")
def demo(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(root / "data", num_sequences=480, seed=1, species=SPECIES, image_sizes=SMALL_SIZES)
    prepare_images(
        [str(root / "data" / "train_metadata.csv")], str(root / "data" / "images"), str(root / "prepared"),
        PrepareSettings(long_side=160),
    )
    return root


@pytest.fixture(scope="module")
def trained(demo):
    recipe = apply_overrides(load_recipe("cpu_tiny"), OVERRIDES)
    summary = run_training(
        recipe,
        metadata=str(demo / "data" / "train_metadata.csv"),
        labels=str(demo / "data" / "train_labels.csv"),
        images_dir=str(demo / "prepared"),
        out_dir=str(demo / "run"),
        num_workers=2,
    )
    return recipe, summary, demo / "run"


def test_training_learns_and_beats_the_prior_baseline(trained):
    _recipe, summary, run = trained
    history = pd.read_csv(run / "metrics.csv")
    assert list(history["stage"]) == ["s96"] * 4 + ["s128"] * 4
    assert list(history["epoch"]) == [1, 2, 3, 4] * 2
    # Epoch 1 starts at the prior's loss (the head bias is logit(prior)): a 15% drop is learning.
    assert history["train_loss"].iloc[-2:].mean() < 0.85 * history["train_loss"].iloc[:2].mean()
    best = summary.stages[-1]
    prior = history["val_prior_metric"].iloc[0]
    assert best.prior_metric == pytest.approx(prior)
    # The demo recipe on this CI-sized demo data: 0.54 of the prior when measured (0.77 before the demo
    # data and recipe were made to learn); the bound leaves room for run-to-run noise.
    assert best.best_val_metric < 0.65 * prior, (best.best_val_metric, prior)
    # The image-level loss and the sequence-level metric are both reported.
    assert {"val_loss", "val_metric", "images_per_s", "lr"} <= set(history.columns)
    assert (history["images_per_s"] > 0).all()


def test_outputs_are_complete_and_weights_only(trained):
    _recipe, _summary, run = trained
    state = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    assert state["format"] == "camtrap.model/1"
    assert len(state["classes"]) == 54 and state["classes"][15] == "empty"
    assert state["inference_long_side"] == 128
    assert len(state["priors"]) == 54 and 0.5 < state["priors"][15] < 0.8
    assert state["recipe"]["name"] == "cpu_tiny"
    model = create_classifier("resnet10t", num_classes=54)
    model.load_state_dict(state["model"])
    for stage in ("s96", "s128"):
        best = read_state_file(str(run / "stages" / stage / "best.pt"))
        assert best["metrics"]["val_loss"] == min(h["val_loss"] for h in best["history"])
        assert (run / "stages" / stage / "metrics.csv").exists()
    assert any((run / "tensorboard").iterdir())
    assert (run / "recipe.yaml").exists() and (run / "metrics.json").exists()


def test_rerun_after_interruption_completes_without_redoing_work(trained, demo):
    recipe, _summary, run = trained
    before = pd.read_csv(run / "metrics.csv")
    # Interrupted during the last stage: its exported best and the final model never got written.
    shutil.rmtree(run / "stages" / "s128")
    (run / "model.pt").unlink()
    again = run_training(
        recipe,
        metadata=str(demo / "data" / "train_metadata.csv"),
        labels=str(demo / "data" / "train_labels.csv"),
        images_dir=str(demo / "prepared"),
        out_dir=str(run),
        num_workers=2,
    )
    assert [s.skipped for s in again.stages] == [True, False]
    after = pd.read_csv(run / "metrics.csv")
    pd.testing.assert_frame_equal(before[["stage", "epoch", "val_loss"]], after[["stage", "epoch", "val_loss"]])
    torch.load(run / "model.pt", map_location="cpu", weights_only=True)


def test_amp_resolution():
    assert resolve_amp("auto", torch.device("cpu")) == (None, False)
    assert resolve_amp("off", torch.device("cpu")) == (None, False)
    assert resolve_amp("bf16", torch.device("cpu")) == (torch.bfloat16, False)
    with pytest.raises(ValueError, match="CUDA"):
        resolve_amp("fp16", torch.device("cpu"))


def test_pad_batch_pads_with_fill():
    a = np.full((4, 6, 3), 10, np.uint8)
    b = np.full((3, 4, 3), 20, np.uint8)
    out = pad_batch([a, b], np.array([1, 2, 3], np.uint8))
    assert out.shape == (2, 4, 6, 3)
    assert (out[0] == 10).all() and (out[1, :3, :4] == 20).all()
    assert (out[1, 3, :] == [1, 2, 3]).all() and (out[1, :, 4:] == [1, 2, 3]).all()
