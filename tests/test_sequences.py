"""Sequences from a folder's EXIF capture times, and class lists taken from the labels header."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from camtrap.data.classes import COMPETITION_CLASSES
from camtrap.data.contract import ContractError, read_labels, read_metadata
from camtrap.data.sequences import (
    SEQUENCES_FILE,
    exif_capture_time,
    list_images,
    metadata_or_sequences,
)
from camtrap.errors import InputError

T0 = dt.datetime(2021, 6, 1, 22, 15, 0)


def jpeg(path: Path, when: dt.datetime | None = None, tag: str = "original", raw: str | None = None) -> None:
    """A tiny frame with its time in EXIF DateTimeOriginal (or DateTime), or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    value = raw if raw is not None else (when.strftime("%Y:%m:%d %H:%M:%S") if when else None)
    if value is not None and tag == "original":
        exif.get_ifd(0x8769)[36867] = value
    elif value is not None:
        exif[306] = value
    Image.new("RGB", (32, 24), (40, 60, 80)).save(path, format="PNG" if path.suffix.lower() == ".png" else "JPEG",
                                                    exif=exif.tobytes() if value is not None else b"")


@pytest.fixture
def card(tmp_path: Path) -> Path:
    """Two camera folders: bursts 1 s apart, gaps of 9 and 10 s (the default gap is 10 s), odd files."""
    root = tmp_path / "card"
    s = dt.timedelta(seconds=1)
    # camA: a 3-frame burst, a frame 9 s later (same trigger), then one 10 s later (a new one).
    jpeg(root / "camA" / "IMG_0001.JPG", T0)
    jpeg(root / "camA" / "IMG_0002.JPG", T0 + s)
    jpeg(root / "camA" / "IMG_0003.jpeg", T0 + 2 * s)
    jpeg(root / "camA" / "IMG_0004.jpg", T0 + 11 * s)
    jpeg(root / "camA" / "IMG_0005.png", T0 + 21 * s, tag="datetime")  # only DateTime: the fallback
    # camB (nested): the same clock times are another camera's, never merged with camA's.
    jpeg(root / "site2" / "camB" / "b1.jpg", T0)
    jpeg(root / "site2" / "camB" / "b2.jpg", T0 + s)
    jpeg(root / "site2" / "camB" / "no_time.jpg")
    jpeg(root / "site2" / "camB" / "bad_time.jpg", raw="2015:01:15 06:01:70")
    (root / "site2" / "camB" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "camA" / "notes.txt").write_text("not an image")
    jpeg(root / ".thumbnails" / "IMG_0001.JPG", T0)  # a hidden folder is not the camera's
    return root


def test_list_images_finds_every_image_in_any_case_and_skips_the_rest(card):
    names = list_images(str(card))
    assert names == sorted(names) and len(names) == 10
    assert "camA/IMG_0005.png" in names and "camA/IMG_0003.jpeg" in names
    assert not any(n.endswith(".txt") or n.startswith(".thumbnails") for n in names)


def test_a_folder_becomes_sequences_per_camera_from_capture_times(card, tmp_path, capsys):
    out = tmp_path / "out" / SEQUENCES_FILE
    (path,) = metadata_or_sequences(None, str(card), str(out), job="predict")
    assert path == str(out)
    printed = capsys.readouterr().out
    assert "10 images in 6 sequences from 2 camera folders; 3 without a capture time" in printed
    assert "pass it back as --metadata" in printed
    table = pd.read_csv(out, dtype=str, keep_default_na=False).set_index("file_name")
    seq = table["seq_id"]
    assert seq["camA/IMG_0001.JPG"] == seq["camA/IMG_0002.JPG"] == seq["camA/IMG_0003.jpeg"] == seq["camA/IMG_0004.jpg"]
    assert seq["camA/IMG_0001.JPG"] == "camA/IMG_0001.JPG"  # a sequence is named after its first frame
    assert seq["camA/IMG_0005.png"] == "camA/IMG_0005.png"  # 10 s after the last frame: a new trigger
    assert seq["site2/camB/b1.jpg"] == seq["site2/camB/b2.jpg"] == "site2/camB/b1.jpg"
    for name in ("no_time.jpg", "bad_time.jpg", "corrupt.jpg"):
        assert seq[f"site2/camB/{name}"] == f"site2/camB/{name}"  # no time: a sequence of its own
    assert table.loc["camA/IMG_0005.png", "datetime"] == "2021-06-01 22:15:21"  # from DateTime
    notes = table["time_note"]
    assert notes["site2/camB/no_time.jpg"] == "no EXIF DateTimeOriginal or DateTime"
    assert "'2015:01:15 06:01:70' is not a valid EXIF time" in notes["site2/camB/bad_time.jpg"]
    assert notes["site2/camB/corrupt.jpg"] and notes["camA/IMG_0001.JPG"] == ""
    assert table.loc["site2/camB/b1.jpg", "camera"] == "site2/camB"
    # It is a metadata file like any other: the contract reads it, camera included.
    md = read_metadata(str(out), strict=True)
    assert md.frame["seq_id"].nunique() == 6 and set(md.frame["camera"]) == {"camA", "site2/camB"}


def test_the_gap_and_a_prepared_folders_times_regroup_without_rereading_images(card, tmp_path, capsys):
    prepared = tmp_path / "prepared"
    metadata_or_sequences(None, str(card), str(prepared / SEQUENCES_FILE))
    for image in (p for p in card.rglob("*") if p.is_file()):  # prepared JPEGs carry no EXIF: times come from the table
        image.unlink()
    (path,) = metadata_or_sequences(None, str(prepared), str(tmp_path / "wide.csv"), gap_s=60)
    assert "capture times from" in capsys.readouterr().out
    table = pd.read_csv(path, dtype=str, keep_default_na=False).set_index("file_name")
    assert table.loc["camA/IMG_0005.png", "seq_id"] == "camA/IMG_0001.JPG"  # 10 s < 60 s: one sequence now


def test_explicit_metadata_wins_and_a_gap_beside_it_is_refused(card, tmp_path):
    assert metadata_or_sequences(["m.csv"], str(card), str(tmp_path / "s.csv")) == ["m.csv"]
    with pytest.raises(InputError, match="--sequence-gap"):
        metadata_or_sequences(["m.csv"], str(card), str(tmp_path / "s.csv"), gap_s=5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        metadata_or_sequences(None, str(tmp_path / "empty"), str(tmp_path / "s.csv"))


def test_exif_time_reading_never_raises(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"")
    with open(tmp_path / "x.jpg", "rb") as f:
        assert exif_capture_time(f) == (None, "not a recognised image (no capture time)")


def _labels(path: Path, classes) -> str:
    rows = ["seq_id," + ",".join(classes), "s1," + ",".join("1" if i == 0 else "0" for i in range(len(classes)))]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_classes_come_from_the_labels_header_by_default(tmp_path):
    own = _labels(tmp_path / "own.csv", ["white_tailed_deer", "black_bear", "blank"])
    assert read_labels(own, classes="auto").classes == ("white_tailed_deer", "black_bear", "blank")
    shuffled = list(reversed(COMPETITION_CLASSES))
    competition = _labels(tmp_path / "comp.csv", shuffled)
    labels = read_labels(competition, classes="auto")
    assert labels.classes == COMPETITION_CLASSES  # the competition's own order, whatever the file's
    assert labels.frame.loc[0, "zorilla"] == 1
    assert read_labels(competition, classes=None).classes == tuple(shuffled)  # `classes: labels`


def test_the_strict_competition_list_says_how_to_train_another(tmp_path):
    own = _labels(tmp_path / "own.csv", ["white_tailed_deer", "black_bear"])
    with pytest.raises(ContractError) as err:
        read_labels(own, classes=COMPETITION_CLASSES)
    message = str(err.value)
    assert own in message and "classes: competition" in message and "--set classes=auto" in message
    assert "46 more" in message and len(message.splitlines()) == 1
