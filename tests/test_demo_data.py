"""The generated dataset: deterministic, in the competition layout, with camera-trap-like images and labels."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camtrap.data.classes import COMPETITION_CLASSES
from camtrap.demo import DEFAULT_SPECIES, SMALL_SIZES, make_demo_dataset
from camtrap.demo.planning import parse_sizes

TINY_SIZES = ((256, 192), (256, 144))
CSV_FILES = (
    "train_metadata.csv",
    "train_labels.csv",
    "test_metadata.csv",
    "test_labels.csv",
    "submission_format.csv",
)
FILE_RE = re.compile(r"^(S\d+)/([A-Z]\d{2})/\2_R(\d+)/\1_\2_R\3_PICT\d{4}\.JPG$")
SEQ_RE = re.compile(r"^SER_(S\d+)#([A-Z]\d{2})#(\d+)#(\d+)$")


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    summary = make_demo_dataset(out, num_sequences=200, seed=3, image_sizes=SMALL_SIZES)
    return out, summary


@pytest.fixture(scope="module")
def labels(demo) -> dict[str, dict[str, int]]:
    out, _ = demo
    table = {}
    for split in ("train", "test"):
        header, rows = read_csv(out / f"{split}_labels.csv")
        for row in rows:
            table[row[0]] = dict(zip(header[1:], (int(v) for v in row[1:])))
    return table


@pytest.fixture(scope="module")
def metadata(demo) -> dict[str, list[list[str]]]:
    out, _ = demo
    return {split: read_csv(out / f"{split}_metadata.csv")[1] for split in ("train", "test")}


def test_same_seed_same_bytes_and_workers_do_not_matter(tmp_path):
    kwargs = {"num_sequences": 24, "image_sizes": TINY_SIZES}
    make_demo_dataset(tmp_path / "a", seed=7, **kwargs)
    make_demo_dataset(tmp_path / "b", seed=7, num_workers=2, **kwargs)
    make_demo_dataset(tmp_path / "c", seed=8, **kwargs)
    a, b, c = (all_files(tmp_path / name) for name in "abc")
    assert len(a) > 24 + len(CSV_FILES)
    assert a == b
    assert a.keys() != c.keys() or any(a[k] != c[k] for k in a)
    assert (tmp_path / "a/train_labels.csv").read_bytes() != (tmp_path / "c/train_labels.csv").read_bytes()


def test_csv_headers(demo):
    out, _ = demo
    for name in ("train_metadata.csv", "test_metadata.csv"):
        assert read_csv(out / name)[0] == ["seq_id", "file_name", "datetime"]
    for name in ("train_labels.csv", "test_labels.csv", "submission_format.csv"):
        assert read_csv(out / name)[0] == ["seq_id", *COMPETITION_CLASSES]


def test_metadata_and_labels_name_the_same_sequences(demo, metadata):
    out, summary = demo
    for split in ("train", "test"):
        meta_ids = list(dict.fromkeys(row[0] for row in metadata[split]))
        label_ids = [row[0] for row in read_csv(out / f"{split}_labels.csv")[1]]
        assert meta_ids == label_ids
        assert len(set(label_ids)) == len(label_ids)
    test_ids = list(dict.fromkeys(row[0] for row in metadata["test"]))
    _, sub_rows = read_csv(out / "submission_format.csv")
    assert [row[0] for row in sub_rows] == test_ids
    assert all(v == "0.0" for row in sub_rows for v in row[1:])
    assert (
        len(metadata["train"]) == summary.num_train_images
        and len(metadata["test"]) == summary.num_test_images
    )
    assert summary.num_train_sequences == 150 and summary.num_test_sequences == 50


def test_file_names_relative_unique_existing_and_consistent_with_seq_id(demo, metadata):
    out, _ = demo
    names = [row[1] for split in ("train", "test") for row in metadata[split]]
    assert len(set(names)) == len(names)
    for split, seasons in (("train", {"S1", "S2"}), ("test", {"S3"})):
        for seq_id, name, _ in metadata[split]:
            m, s = FILE_RE.match(name), SEQ_RE.match(seq_id)
            assert m and s, (seq_id, name)
            assert m.group(1) == s.group(1) in seasons
            assert m.group(2) == s.group(2) and m.group(3) == s.group(3)
            assert (out / "images" / name).is_file()
    on_disk = {p.relative_to(out / "images").as_posix() for p in (out / "images").rglob("*.JPG")}
    assert on_disk == set(names)


def test_sequences_have_one_to_three_frames_one_second_apart(metadata):
    frames = defaultdict(list)
    for split in ("train", "test"):
        for seq_id, _, when in metadata[split]:
            frames[seq_id].append(dt.datetime.strptime(when, "%Y-%m-%d %H:%M:%S"))
    assert set(Counter(len(v) for v in frames.values())) == {1, 2, 3}
    for times in frames.values():
        assert all((b - a).total_seconds() == 1 for a, b in itertools.pairwise(times))


def test_images_sizes_modes_and_night_frames(demo, metadata):
    out, summary = demo
    sizes, modes, gray_rgb = set(), Counter(), 0
    by_seq = defaultdict(set)
    for split in ("train", "test"):
        for seq_id, name, _ in metadata[split]:
            with Image.open(out / "images" / name) as im:
                assert im.format == "JPEG"
                sizes.add(im.size)
                modes[im.mode] += 1
                by_seq[seq_id].add((im.size, im.mode))
                if im.mode == "RGB":
                    px = np.asarray(im, dtype=np.int16)
                    if (
                        np.abs(px[..., 0] - px[..., 1]).max() <= 2
                        and np.abs(px[..., 1] - px[..., 2]).max() <= 2
                    ):
                        gray_rgb += 1
    assert sizes == set(SMALL_SIZES)  # both 4:3 and 16:9
    assert set(modes) == {"RGB", "L"} and gray_rgb > 0  # night frames stored both ways
    assert all(len(v) == 1 for v in by_seq.values())  # one camera, one mode per sequence
    mode_l_seqs = sum(1 for v in by_seq.values() if next(iter(v))[1] == "L")
    assert 0 < mode_l_seqs < summary.num_night_sequences
    assert 0.15 <= summary.num_night_sequences / summary.num_sequences <= 0.35


def test_label_statistics(demo, labels):
    _, summary = demo
    species = set(DEFAULT_SPECIES)
    empty = two = 0
    for row in labels.values():
        assert set(row.values()) <= {0, 1}
        on = {c for c, v in row.items() if v}
        if "empty" in on:
            assert on == {"empty"}
            empty += 1
        else:
            assert on and on <= species and len(on) <= 2
            two += len(on) == 2
    assert 0.55 <= empty / len(labels) <= 0.78
    assert two > 0
    assert (empty, two) == (summary.num_empty_sequences, summary.num_two_species_sequences)


def test_every_season_holds_every_species(labels):
    # S2 can be held out as the validation season, S3 is the test season: each needs every class.
    seen = defaultdict(set)
    for seq_id, row in labels.items():
        seen[SEQ_RE.match(seq_id).group(1)] |= {c for c, v in row.items() if v}
    for season in ("S1", "S2", "S3"):
        assert seen[season] == set(DEFAULT_SPECIES) | {"empty"}, season


def test_other_species_and_invalid_names(tmp_path):
    summary = make_demo_dataset(
        tmp_path, num_sequences=30, seed=1, species=["ostrich", "lionfemale"], image_sizes=TINY_SIZES
    )
    assert summary.species == ("ostrich", "lionfemale")
    _, rows = read_csv(tmp_path / "train_labels.csv")
    used = {COMPETITION_CLASSES[i] for row in rows for i, v in enumerate(row[1:]) if v == "1"}
    assert used == {"ostrich", "lionfemale", "empty"}

    with pytest.raises(ValueError, match="unicorn"):
        make_demo_dataset(tmp_path / "bad", num_sequences=4, species=["zebra", "unicorn"])
    with pytest.raises(ValueError, match="empty"):
        make_demo_dataset(tmp_path / "bad", num_sequences=4, species=["empty"])
    with pytest.raises(ValueError, match="twice"):
        make_demo_dataset(tmp_path / "bad", num_sequences=4, species=["zebra", "zebra"])
    assert not (tmp_path / "bad").exists()  # checked before anything is written


def test_frame_sizes_parse_as_the_bench_takes_them():
    assert parse_sizes("2048x1536, 1920X1080") == ((2048, 1536), (1920, 1080))
    with pytest.raises(ValueError, match="'2048-1536' is not WIDTHxHEIGHT"):
        parse_sizes("2048x1536,2048-1536")
    with pytest.raises(ValueError, match="below the minimum side"):
        parse_sizes("8x8")
