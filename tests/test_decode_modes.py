"""The decode mode is recorded from preparation to model.pt and enforced at scoring; training decodes
raw frames in the mode asked for, and exact stays the bytes of resizing in the transform."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from jobs import load_job

from camtrap.bench import untrained_model_file
from camtrap.config.overrides import apply_overrides
from camtrap.config.recipe import load_recipe
from camtrap.data.decoding import images_decode, scoring_decode
from camtrap.data.imageio import decode_image
from camtrap.data.prepare import PrepareSettings, prepare_images
from camtrap.demo import make_demo_dataset
from camtrap.errors import InputError
from camtrap.train.augment import eval_transform, train_transform
from camtrap.train.dataset import decode_files
from camtrap.train.driver import run_training
from camtrap.train.plan import plan_training

pytestmark = pytest.mark.timeout(600)

ONE_STAGE = ["validation.fraction=0.3", "stages=[{name: s64, long_side: 64, batch_size: 4, epochs: 1, lr: 0.003}]"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode")
    make_demo_dataset(root / "data", num_sequences=24, seed=3, species=("zebra", "elephant"))
    return root


@pytest.fixture(scope="module")
def fast_run(ray_session, demo):
    """A folder prepared fast and a model trained on it."""
    data = demo / "data"
    prepare_images(str(data / "train_metadata.csv"), str(data / "images"), str(demo / "prepared_fast"),
                   PrepareSettings(long_side=128, decode="fast"))
    run_training(apply_overrides(load_recipe("cpu_tiny"), ONE_STAGE), metadata=str(data / "train_metadata.csv"),
                 labels=str(data / "train_labels.csv"), images_dir=str(demo / "prepared_fast"),
                 out_dir=str(demo / "run"), num_workers=1)
    return demo / "run" / "model.pt"


def test_decode_files_exact_is_the_transform_s_own_resize_and_fast_keeps_its_sizes(demo):
    images = demo / "data" / "images"
    names = sorted(str(p.relative_to(images)) for p in images.rglob("*.jpg"))[:6]
    for tf in (eval_transform(96, mean=None, std=None), train_transform(96, 1.14, mean=None, std=None, seed=0)):
        seeds = None if tf.__class__.__name__ == "EvalTransform" else list(range(len(names)))
        _, exact = decode_files(names, str(images), tf, seeds)
        _, fast = decode_files(names, str(images), tf, seeds, decode="fast")
        for i, name in enumerate(names):
            full = np.asarray(decode_image((images / name).read_bytes()))
            before = tf(full) if seeds is None else tf(full, seed=seeds[i])  # how training decoded until now
            assert np.array_equal(exact[i], before), name
            assert fast[i].shape == exact[i].shape and not np.array_equal(fast[i], exact[i])


def test_training_takes_the_folder_s_mode_or_the_flag_for_raw_images(demo, fast_run):
    data = demo / "data"
    raw = images_decode(str(data / "images"), "fast")
    assert (raw.mode, raw.read) == ("fast", "fast")
    assert images_decode(str(data / "images"), None).mode == "exact"
    prepared = images_decode(str(demo / "prepared_fast"), None)
    assert (prepared.mode, prepared.read) == ("fast", "exact")  # its files already hold fast pixels
    with pytest.raises(InputError, match="prepared with --decode fast; --decode exact cannot change"):
        plan_training(load_recipe("cpu_tiny"), str(data / "train_metadata.csv"), str(data / "train_labels.csv"),
                      str(demo / "prepared_fast"), num_workers=1, decode="exact")
    # The run folder is pinned to the mode it was trained in.
    run = demo / "run"
    assert json.loads((run / "decode.json").read_text()) == {"decode": "fast"}
    with pytest.raises(InputError, match="made on decode fast images; resuming it on decode exact images"):
        run_training(apply_overrides(load_recipe("cpu_tiny"), ONE_STAGE), metadata=str(data / "train_metadata.csv"),
                     labels=str(data / "train_labels.csv"), images_dir=str(data / "images"), out_dir=str(run),
                     num_workers=1, decode="exact")


def test_model_records_the_mode_and_scoring_another_is_refused_unless_forced(demo, fast_run, capsys):
    assert torch.load(fast_run, map_location="cpu", weights_only=True)["decode"] == "fast"
    data = demo / "data"
    argv = ["--model", str(fast_run), "--metadata", str(data / "train_metadata.csv"), "--images-dir",
            str(data / "images"), "--batch-size", "4"]
    predict = load_job("predict").main
    assert predict([*argv, "--out", str(demo / "refused.csv"), "--decode", "exact"]) == 2
    err = capsys.readouterr().err
    assert f"{fast_run}: this model was trained on decode fast images" in err
    assert "would score" in err and "with decode exact" in err and "--force-decode" in err
    assert not (demo / "refused.csv").exists()

    assert predict([*argv, "--out", str(demo / "forced.csv"), "--decode", "exact", "--force-decode"]) == 0
    out = capsys.readouterr().out
    assert f"predict: warning: --force-decode: scoring with decode exact a model trained on decode fast ({fast_run})" \
        in out
    assert len(pd.read_csv(demo / "forced.csv")) == pd.read_csv(data / "train_metadata.csv")["seq_id"].nunique()

    # By default the model's mode: raw frames decoded fast, no warning.
    assert predict([*argv, "--out", str(demo / "default.csv")]) == 0
    assert "warning" not in capsys.readouterr().out
    settings = json.loads((demo / "default_work" / "predictions" / "settings.json").read_text())
    assert settings["decode"] == "fast"


def test_an_ensemble_of_mixed_modes_is_refused_unless_forced(demo, fast_run, capsys):
    from camtrap.infer.predict import model_metadata

    exact_model = untrained_model_file(str(demo / "exact" / "model.pt"), 64)
    metas = model_metadata([exact_model, str(fast_run)])
    assert [m["decode"] for m in metas] == ["exact", "fast"]  # a model.pt without the key reads as exact too
    with pytest.raises(InputError, match="different decode modes") as e:
        scoring_decode(metas, str(demo / "data" / "images"), None)
    assert f"{exact_model} (exact)" in str(e.value) and f"{fast_run} (fast)" in str(e.value)
    forced = scoring_decode(metas, str(demo / "data" / "images"), "exact", force=True)
    assert forced.mode == "exact"
    assert f"a model trained on decode fast ({fast_run})" in capsys.readouterr().out
    # A prepared folder brings its mode: the exact model is refused on it, naming the folder's manifest.
    with pytest.raises(InputError, match=r"with decode fast \(from the prepared folder's manifest"):
        scoring_decode(metas[:1], str(demo / "prepared_fast"), None)
