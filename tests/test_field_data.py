"""A new user's own data end to end: a card of real frames in camera folders, their own class list.

No metadata CSV and no class setting anywhere: prepare groups the card into sequences from EXIF,
the user labels those sequences with their own classes (here: Gorongosa's 41, not the competition's
54), train and a one-trial sweep take the class list from the labels header, and predict scores the
raw card into every field format, each accounting for every image.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from camtrap_dp import error_lines, validate_package
from jobs import load_job

from camtrap.data.classes import COMPETITION_CLASSES

pytestmark = pytest.mark.timeout(900)

BROKEN = ("edge_cases/african_elephants_truncated_file.jpg", "edge_cases/error_img.JPG")


@pytest.fixture(scope="module")
def field(ray_session, real_dir, tmp_path_factory):
    """The card (two camera folders of real Gorongosa frames plus two broken files), prepared, labelled, trained."""
    root = tmp_path_factory.mktemp("own")
    card = root / "card"
    real = pd.read_csv(real_dir / "labels.csv", dtype=str, keep_default_na=False)
    frames = real[real["subset"] == "gorongosa_fieldguide"].reset_index(drop=True)
    label_of, exif_of = {}, {}
    for i, row in frames.iterrows():
        name = f"{'north' if i % 2 else 'south'}/{Path(row['file_name']).name}"
        (card / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real_dir / row["file_name"], card / name)  # bytes, EXIF and all
        label_of[name], exif_of[name] = row["labels"], row["datetime_original"]
    for broken in BROKEN:
        shutil.copyfile(real_dir / "images" / broken, card / "south" / Path(broken).name)

    assert load_job("prepare").main(["--images-dir", str(card), "--out", str(root / "prepared"),
                                     "--long-side", "160"]) == 0
    sequences = pd.read_csv(root / "prepared" / "sequences.csv", dtype=str, keep_default_na=False)
    classes = sorted(set(label_of.values()))
    rows = []
    for seq_id, files in sequences.groupby("seq_id")["file_name"]:
        present = {label_of[f] for f in files if f in label_of}
        if present:  # the broken files have no label: recorded by train as unusable, not fatal
            rows.append({"seq_id": seq_id, **{c: int(c in present) for c in classes}})
    pd.DataFrame(rows, columns=["seq_id", *classes]).to_csv(root / "labels.csv", index=False)
    assert load_job("train").main(["--recipe", "cpu_tiny", "--labels", str(root / "labels.csv"),
                                   "--images-dir", str(root / "prepared"), "--out", str(root / "run"),
                                   "--set", "stages.0.epochs=1", "--set", "stages.1.epochs=1"]) == 0
    return {"root": root, "card": card, "classes": classes, "label_of": label_of, "exif_of": exif_of,
            "sequences": sequences}


def test_prepare_groups_the_card_into_sequences_from_exif(field):
    sequences = field["sequences"]
    assert len(sequences) == len(field["label_of"]) + len(BROKEN)  # every file of the card
    assert set(sequences["camera"]) == {"north", "south"}
    # Each frame's time is the one its source lists (EXIF DateTimeOriginal); 16 of the 108 have none.
    got = dict(zip(sequences["file_name"], sequences["datetime"]))
    expected = {name: when.replace(":", "-", 2) for name, when in field["exif_of"].items()}
    assert {name: got[name] for name in expected} == expected
    assert sum(1 for when in expected.values() if when) == 92
    assert sequences.loc[sequences["file_name"] == "south/error_img.JPG", "time_note"].item() != ""


def test_training_takes_the_users_class_list_from_the_labels_header(field):
    state = torch.load(field["root"] / "run" / "model.pt", map_location="cpu", weights_only=True)
    assert state["classes"] == field["classes"] and len(state["classes"]) == 41
    assert set(state["classes"]) != set(COMPETITION_CLASSES)


def test_a_one_trial_sweep_takes_it_too_from_the_raw_card_in_fast_decode(field, capsys):
    root, card = field["root"], field["card"]
    argv = ["--space", "cpu_smoke", "--recipe", "cpu_tiny", "--labels", str(root / "labels.csv"),
            "--images-dir", str(card), "--out", str(root / "sweep"), "--num-samples", "1"]
    assert load_job("tune").main([*argv, "--decode", "fast"]) == 0
    assert "on decode fast images as the trials were" in capsys.readouterr().out
    results = pd.read_csv(root / "sweep" / "results.csv")
    assert len(results) == 1 and results["status"].item() in {"completed", "stopped_early"}
    assert results["best_val_metric"].notna().all()
    # The sweep and its trial are pinned to the pixels they saw; resuming on others is refused, naming both.
    trials = list((root / "sweep" / "trials").iterdir())
    for folder in [root / "sweep", *trials]:
        assert json.loads((folder / "decode.json").read_text()) == {"decode": "fast"}, folder
    assert load_job("tune").main([*argv, "--decode", "exact"]) == 2
    assert "made on decode fast images; resuming it on decode exact images" in capsys.readouterr().err


def test_the_raw_card_scores_into_every_field_format(field, tmp_path, capsys):
    root, card = field["root"], field["card"]
    out = tmp_path / "results"
    capsys.readouterr()
    assert load_job("predict").main(["--model", str(root / "run" / "model.pt"), "--images-dir", str(card),
                                     "--out", str(out), "--utc-offset", "+02:00"]) == 0
    printed = capsys.readouterr().out
    assert "no --metadata:" in printed and "41 classes have no taxon" in printed
    names = sorted(str(p.relative_to(card)) for p in card.rglob("*") if p.is_file())
    # The per-sequence CSV: every sequence of the inferred table once.
    sequences = pd.read_csv(out / "sequences.csv", dtype=str, keep_default_na=False)
    assert sorted(sequences["file_name"]) == names
    table = pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False)
    assert sorted(table["seq_id"]) == sorted(set(sequences["seq_id"]))
    assert set(table["top1"]) <= set(field["classes"])
    # Camtrap DP: valid against the standard, every image a media row.
    report = validate_package(out / "camtrap-dp", tmp_path / "validate")
    assert report.valid, error_lines(report)
    media = pd.read_csv(out / "camtrap-dp" / "media.csv", dtype=str, keep_default_na=False)
    assert sorted(media["filePath"]) == names
    assert media["timestamp"].str.endswith("+02:00").all()
    # MegaDetector: every image once; the two broken ones as failures with their reasons.
    doc = json.loads((out / "megadetector.json").read_text())
    assert sorted(im["file"] for im in doc["images"]) == names
    assert list(doc["classification_categories"].values()) == field["classes"]
    failures = {im["file"]: im["failure"] for im in doc["images"] if im.get("failure")}
    assert set(failures) == {f"south/{Path(b).name}" for b in BROKEN}
    failed = pd.read_csv(out / "failed_images.csv")
    assert sorted(failed["file_name"]) == sorted(failures)
