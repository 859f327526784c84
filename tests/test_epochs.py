"""Seeded epochs: the per-rank permutation, image seeds, the compact table and the epoch dataset."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from camtrap.data.classes import FILE_NAME, SEQ_ID
from camtrap.train.augment import eval_transform, train_transform
from camtrap.train.dataset import IMAGE, TARGET
from camtrap.train.epochs import (
    ROW,
    EpochTable,
    epoch_dataset,
    epoch_indices,
    epoch_permutation,
    image_seed,
    stage_indices,
    validation_indices,
)

CLASSES = ("empty", "zebra", "lion", "gazelle")


# ------------------------------------------------------------------------------------------ permutation


@pytest.mark.parametrize(("n_rows", "world"), [(1003, 4), (1000, 8), (7, 3), (5, 1)])
def test_epoch_indices_cut_one_permutation_into_equal_disjoint_rank_slices(n_rows, world):
    slices = [epoch_indices(n_rows, seed=3, epoch=2, rank=r, world_size=world) for r in range(world)]
    assert {len(s) for s in slices} == {n_rows // world}
    assert all(s.dtype == np.int64 for s in slices)
    seen = np.concatenate(slices)
    assert len(np.unique(seen)) == len(seen)  # no row twice in an epoch
    assert n_rows - len(seen) == n_rows % world < world  # all but fewer than world_size rows
    assert seen.min() >= 0 and seen.max() < n_rows
    # The slices are consecutive pieces of one world-independent permutation.
    assert np.array_equal(seen, epoch_permutation(n_rows, 3, 2)[:len(seen)])


def test_epoch_indices_repeat_for_a_seed_and_change_with_the_epoch_and_seed():
    a = epoch_indices(10_000, seed=0, epoch=1, rank=1, world_size=4)
    assert np.array_equal(a, epoch_indices(10_000, seed=0, epoch=1, rank=1, world_size=4))
    assert not np.array_equal(a, epoch_indices(10_000, seed=0, epoch=2, rank=1, world_size=4))
    assert not np.array_equal(a, epoch_indices(10_000, seed=1, epoch=1, rank=1, world_size=4))
    # Different epochs put different rows on a rank, not the same rows reordered.
    b = epoch_indices(10_000, seed=0, epoch=2, rank=1, world_size=4)
    assert len(np.intersect1d(a, b)) < 0.5 * len(a)


def test_epoch_indices_refuse_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank 4"):
        epoch_indices(100, 0, 0, rank=4, world_size=4)
    with pytest.raises(ValueError, match="non-negative"):
        epoch_indices(100, -1, 0, rank=0, world_size=4)


def test_validation_indices_score_every_row_once():
    parts = [validation_indices(103, r, 4) for r in range(4)]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(103))


def test_image_seeds_depend_on_seed_epoch_and_row_only():
    s = image_seed(5, 2, 12345)
    assert s == image_seed(5, 2, 12345) and 0 <= s < 2**63
    others = {image_seed(6, 2, 12345), image_seed(5, 3, 12345), image_seed(5, 2, 12346)}
    assert s not in others and len(others) == 3
    assert len({image_seed(0, 0, r) for r in range(5000)}) == 5000


# ------------------------------------------------------------------------------------------ the table


def _frame(n_seq: int = 40, seed: int = 0, dtype=None) -> pd.DataFrame:
    """A TrainingTable frame: sequences of 1-3 rows, interleaved (a sequence's rows are not adjacent)."""
    rng = np.random.default_rng(seed)
    seq_targets = np.zeros((n_seq, len(CLASSES)), dtype=np.float32)
    seq_targets[np.arange(n_seq), rng.integers(0, len(CLASSES), n_seq)] = 1
    seq_targets[rng.random(n_seq) < 0.2, 2] = 1  # some sequences with two classes
    codes = np.repeat(np.arange(n_seq), rng.integers(1, 4, n_seq))
    codes = codes[rng.permutation(len(codes))]
    seq_ids = np.array([f"SER_S1#B{k:02d}#1#{k * 7}" for k in range(n_seq)], dtype=object)
    frame = pd.DataFrame({SEQ_ID: seq_ids[codes], FILE_NAME: [f"S1/img_{i}.jpg" for i in range(len(codes))],
                          TARGET: list(seq_targets[codes])})
    return frame.astype({SEQ_ID: dtype, FILE_NAME: dtype}) if dtype else frame


@pytest.mark.parametrize("dtype", [None, object, "str"])
def test_compact_table_gives_back_every_row(dtype):
    frame = _frame(dtype=dtype)
    table = EpochTable.from_frame(frame, CLASSES)
    assert len(table) == len(frame) and table.n_sequences == frame[SEQ_ID].nunique()
    assert table.targets.dtype == np.uint8 and table.targets.shape == (table.n_sequences, len(CLASSES))
    assert table.seq_index.dtype == np.int32
    cols = table.rows(np.arange(len(frame)))
    assert np.array_equal(cols[TARGET], np.stack(frame[TARGET].to_numpy()))
    assert cols[TARGET].dtype == np.float32
    assert list(cols[SEQ_ID]) == list(frame[SEQ_ID]) and list(cols[FILE_NAME]) == list(frame[FILE_NAME])
    picked = np.array([5, 0, 17, 5])
    assert list(table.rows(picked)[FILE_NAME]) == list(frame[FILE_NAME].to_numpy()[picked])
    # Pickling (what ray.put does) keeps it whole.
    again = pickle.loads(pickle.dumps(table))
    assert np.array_equal(again.rows(picked)[TARGET], table.rows(picked)[TARGET])


def test_compact_table_from_sequences_equals_the_frame_route():
    frame = _frame(seed=1)
    first = frame.drop_duplicates(SEQ_ID)
    table = EpochTable.from_sequences(frame[SEQ_ID], frame[FILE_NAME], first[SEQ_ID][::-1],
                                      np.stack(first[TARGET].to_numpy())[::-1], CLASSES)
    rows = np.arange(len(frame))
    assert np.array_equal(table.rows(rows)[TARGET], EpochTable.from_frame(frame, CLASSES).rows(rows)[TARGET])
    assert list(table.rows(rows)[SEQ_ID]) == list(frame[SEQ_ID])
    with pytest.raises(ValueError, match="no target"):
        EpochTable.from_sequences(["a", "zz"], ["f1", "f2"], ["a"], np.ones((1, len(CLASSES))), CLASSES)
    with pytest.raises(ValueError, match="repeat"):
        EpochTable.from_sequences(["a"], ["f1"], ["a", "a"], np.ones((2, len(CLASSES))), CLASSES)


def test_compact_table_refuses_targets_that_are_not_zero_or_one():
    frame = _frame(n_seq=3)
    frame[TARGET] = [t * 0.5 for t in frame[TARGET]]
    with pytest.raises(ValueError, match="0 or 1"):
        EpochTable.from_frame(frame, CLASSES)
    with pytest.raises(ValueError, match="5 classes"):
        EpochTable.from_frame(_frame(n_seq=3), CLASSES[:-1] + ("extra", "more"))


# ------------------------------------------------------------------------------------------ the dataset


@pytest.fixture(scope="module")
def tiny_season(tmp_path_factory):
    """12 small JPEGs, 60 rows naming them (row i -> image i % 12, i.e. one per row), one unreadable file."""
    root = tmp_path_factory.mktemp("epochs")
    rng = np.random.default_rng(0)
    for k in range(12):
        img = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / f"img_{k}.jpg", quality=95)
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    frame = _frame(n_seq=40, seed=2).head(60).reset_index(drop=True)
    names = [f"img_{i % 12}.jpg" for i in range(len(frame))]
    names[7] = "broken.jpg"
    frame[FILE_NAME] = names
    return str(root), frame


def _batches(ds, batch_size: int = 8) -> list[dict[str, np.ndarray]]:
    return list(ds.iter_batches(batch_size=batch_size, batch_format="numpy"))


@pytest.mark.timeout(300)
def test_epoch_dataset_is_the_same_on_every_build_and_changes_with_the_epoch(ray_session, tiny_season):
    images_dir, frame = tiny_season
    ref = ray_session.put(EpochTable.from_frame(frame, CLASSES))
    tf = train_transform(64, 1.14, mean=None, std=None)
    world, seed = 2, 11

    def build(epoch: int, rank: int = 0):
        indices = epoch_indices(len(frame), seed, epoch, rank, world)
        ds = epoch_dataset(ref, images_dir, tf, indices, seed, epoch, rows_per_block=4, rows_per_task=8)
        return indices, _batches(ds)

    indices, first = build(epoch=0)
    _, second = build(epoch=0)
    assert [len(b[ROW]) for b in first] == [len(b[ROW]) for b in second]
    for a, b in zip(first, second):
        assert np.array_equal(a[ROW], b[ROW]) and np.array_equal(a[TARGET], b[TARGET])
        assert all(np.array_equal(x, y) for x, y in zip(a[IMAGE], b[IMAGE]))
    # In the permutation's order, each row with its own target and file; the broken file's place taken by
    # another image of its block (every rank keeps its step count), none skipped.
    rows = np.concatenate([b[ROW] for b in first])
    assert len(rows) == len(indices)
    broken = int(np.flatnonzero(indices == 7)[0])
    assert np.array_equal(np.delete(rows, broken), np.delete(indices, broken))
    assert rows[broken] != 7 and rows[broken] in indices[broken // 4 * 4:broken // 4 * 4 + 4]
    all_rows = EpochTable.from_frame(frame, CLASSES).rows(rows)
    assert np.array_equal(np.concatenate([b[TARGET] for b in first]), all_rows[TARGET])
    assert list(np.concatenate([b[FILE_NAME] for b in first])) == list(all_rows[FILE_NAME])
    image = first[0][IMAGE][0]
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    # Another epoch: another order; the other rank: other rows.
    _, other_epoch = build(epoch=1)
    # A stage's dataset over epochs 0 and 1 gives each epoch's rows and augmentations, one after the other.
    both, epoch_of = stage_indices(len(frame), seed, [0, 1], 0, world, rows_per_epoch=24)
    assert np.array_equal(both[:24], indices[:24]) and list(np.unique(epoch_of[24:])) == [1]
    stage = _batches(epoch_dataset(ref, images_dir, tf, both, seed, epoch_of, rows_per_block=4, rows_per_task=8))
    stage_images = [im for b in stage for im in b[IMAGE]]
    assert len(stage_images) == 48
    assert all(np.array_equal(x, y) for x, y in zip(stage_images[:24], [im for b in first for im in b[IMAGE]]))
    assert all(np.array_equal(x, y) for x, y in zip(stage_images[24:], [im for b in other_epoch for im in b[IMAGE]]))
    assert not np.array_equal(np.concatenate([b[ROW] for b in other_epoch]), rows)
    _, other_rank = build(epoch=0, rank=1)
    assert not set(np.concatenate([b[ROW] for b in other_rank])) & set(rows)


@pytest.mark.timeout(300)
def test_epoch_dataset_for_validation_scores_a_rank_s_rows_in_order(ray_session, tiny_season):
    images_dir, frame = tiny_season
    table = EpochTable.from_frame(frame, CLASSES)
    indices = validation_indices(len(frame), 1, 3)
    ds = epoch_dataset(table, images_dir, eval_transform(64, mean=None, std=None), indices, seed=None, epoch=0,
                       rows_per_block=4, rows_per_task=8)
    batches = _batches(ds, batch_size=5)
    assert np.array_equal(np.concatenate([b[ROW] for b in batches]), indices[indices != 7])
    assert list(np.concatenate([b[SEQ_ID] for b in batches])) == list(frame[SEQ_ID].to_numpy()[indices[indices != 7]])
    capped = epoch_dataset(table, images_dir, eval_transform(64, mean=None, std=None), indices, None, 0,
                           max_cpus=1, max_object_store_bytes=2**28)
    options = capped.context.execution_options
    assert options.preserve_order and options.resource_limits.cpu == 1
    assert options.resource_limits.object_store_memory == 2**28
    again = _batches(capped)
    assert all(np.array_equal(x, y) for x, y in zip(np.concatenate([b[IMAGE] for b in batches]),
                                                     np.concatenate([b[IMAGE] for b in again])))
    with pytest.raises(ValueError, match="no rows"):
        epoch_dataset(table, images_dir, eval_transform(64, mean=None, std=None), indices[:0], None, 0)
