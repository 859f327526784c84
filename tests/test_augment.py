"""The train/eval pipelines: sizes and aspect ratios, determinism, normalisation, the crop table."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from camtrap.config.recipe import crop_long_side
from camtrap.data.imageio import resize_dims
from camtrap.train.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    crop_size,
    eval_transform,
    normalize,
    stage_dims,
    train_transform,
)

MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.3)


def _image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A colourful random RGB uint8 image (channels differ, so ToGray is detectable)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    img[..., 0] = np.clip(img[..., 0].astype(int) // 2 + 128, 0, 255)  # red-ish
    return img


def _denormalize(chw: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    return (
        chw * np.asarray(std, dtype=np.float32)[:, None, None]
        + np.asarray(mean, dtype=np.float32)[:, None, None]
    )


@pytest.mark.parametrize(
    ("long_side", "crop"),
    [(296, 256), (360, 320), (480, 416), (96, 80), (128, 112)],
)
def test_crop_long_side_reproduces_the_table(long_side: int, crop: int) -> None:
    # The first three rows are the 2nd-place table (crop ratio 1.14); the last two are cpu_tiny's.
    assert crop_long_side(long_side, 1.14) == crop


def test_crop_long_side_rounds_halves_up_and_rejects_bad_input() -> None:
    assert crop_long_side(72, 1.0) == 80  # 4.5 -> 5 (Python's round would give 4 -> 64)
    assert crop_long_side(296, 1.0) == 304  # may exceed the resized side; the crop is clipped later
    with pytest.raises(ValueError, match="crop_ratio"):
        crop_long_side(296, 0.9)
    with pytest.raises(ValueError, match="at least 16"):
        crop_long_side(32, 5.0)


@pytest.mark.parametrize(
    ("size", "long_side", "train_resized", "crop", "eval_resized"),
    [
        # The seed's three stages: 296 -> 256, 360 -> 320, 480 -> 416 crops of 4:3 frames keep 0.75.
        ((512, 384), 296, (296, 222), (256, 192), (288, 208)),
        ((512, 384), 360, (360, 270), (320, 240), (352, 256)),
        ((512, 384), 480, (480, 360), (416, 312), (480, 352)),
        ((512, 288), 296, (296, 167), (256, 144), (288, 160)),  # 16:9
        ((512, 288), 360, (360, 203), (320, 180), (352, 192)),
        ((512, 288), 480, (480, 270), (416, 234), (480, 256)),
        ((384, 512), 296, (222, 296), (192, 256), (208, 288)),  # portrait
        ((512, 384), 128, (128, 96), (112, 84), (128, 96)),
        ((512, 384), 96, (96, 72), (80, 60), (96, 64)),
    ],
)
def test_train_and_eval_output_sizes(size, long_side, train_resized, crop, eval_resized) -> None:
    """Training resizes each stage to its long side exactly (the seed's crops keep the frame's aspect);
    evaluation and inference use the preparation rule (both sides floored to 16: 360 -> 352x256)."""
    width, height = size
    assert stage_dims(width, height, long_side) == train_resized
    assert resize_dims(width, height, long_side) == eval_resized
    crop_long = crop_long_side(long_side, 1.14)
    assert crop_size(*train_resized, crop_long) == crop
    rw, rh = train_resized
    cw, ch = crop
    if rw >= rh:
        assert cw == crop_long and abs(ch - crop_long * rh / rw) <= 0.5
    else:
        assert ch == crop_long and abs(cw - crop_long * rw / rh) <= 0.5
    if size == (512, 384):
        assert abs(ch / cw - 0.75) < 0.01  # the seed's 256x192

    img = _image(width, height)
    out = train_transform(long_side, 1.14, MEAN, STD, seed=1)(img)
    assert out.shape == (3, crop[1], crop[0]) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    ev = eval_transform(long_side, MEAN, STD)(img)
    assert ev.shape == (3, eval_resized[1], eval_resized[0]) and ev.dtype == np.float32


def test_crop_is_clipped_to_the_image() -> None:
    # Crop ratio 1.0 at 296 gives a 304-px crop, wider than the 296-px resize: it is the whole image.
    out = train_transform(296, 1.0, MEAN, STD, seed=0)(_image(512, 384))
    assert out.shape == (3, 222, 296)


def test_eval_transform_is_deterministic_and_equals_pil_lanczos_then_normalise() -> None:
    img = _image(512, 384, seed=3)
    tf = eval_transform(128, IMAGENET_MEAN, IMAGENET_STD)
    a, b = tf(img), tf(img)
    assert np.array_equal(a, b)
    direct = np.asarray(Image.fromarray(img).resize((128, 96), resample=Image.Resampling.LANCZOS)).astype(
        np.float32
    )
    direct = (direct / 255.0 - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    assert np.allclose(a, direct.transpose(2, 0, 1), atol=1e-6)
    # A PIL image gives the same as its array.
    assert np.array_equal(tf(Image.fromarray(img)), a)


def test_normalisation_is_applied() -> None:
    white = np.full((96, 128, 3), 255, dtype=np.uint8)
    out = eval_transform(128, MEAN, STD)(white)
    expected = [(1.0 - m) / s for m, s in zip(MEAN, STD)]
    assert np.allclose(out.reshape(3, -1).mean(axis=1), expected, atol=1e-5)
    mid = normalize(np.full((2, 2, 3), 51, dtype=np.uint8), MEAN, STD)
    assert mid.shape == (3, 2, 2)
    assert np.allclose(mid[:, 0, 0], [(0.2 - m) / s for m, s in zip(MEAN, STD)], atol=1e-6)


def test_train_transform_with_a_seed_is_reproducible_and_picklable() -> None:
    imgs = [_image(512, 384, seed=i) for i in range(3)] + [_image(512, 288, seed=9)]
    a = train_transform(128, 1.14, MEAN, STD, seed=7)
    b = train_transform(128, 1.14, MEAN, STD, seed=7)
    restored = pickle.loads(pickle.dumps(b))  # what Ray does when shipping it to a worker
    outs_a = [a(i) for i in imgs]
    outs_b = [b(i) for i in imgs]
    outs_r = [restored(i) for i in imgs]
    for x, y, z in zip(outs_a, outs_b, outs_r):
        assert np.array_equal(x, y) and np.array_equal(x, z)
    c = train_transform(128, 1.14, MEAN, STD, seed=8)
    assert any(not np.array_equal(x, c(i)) for x, i in zip(outs_a, imgs))
    # Random: repeated calls on one image differ.
    assert not np.array_equal(a(imgs[0]), a(imgs[0]))


def test_train_outputs_have_three_channels_and_some_are_grayscale() -> None:
    img = _image(128, 96, seed=5)
    tf = train_transform(128, 1.14, MEAN, STD, seed=11)
    gray = colour = 0
    for _ in range(40):
        out = tf(img)
        assert out.shape[0] == 3
        rgb = _denormalize(out)
        if np.allclose(rgb[0], rgb[1], atol=1e-5) and np.allclose(rgb[1], rgb[2], atol=1e-5):
            gray += 1
        else:
            colour += 1
    # ToGray(p=0.2) over 40 draws: some grey, mostly colour.
    assert gray >= 1 and colour > gray


def test_bad_inputs_are_rejected() -> None:
    tf = eval_transform(96, MEAN, STD)
    with pytest.raises(ValueError, match="uint8"):
        tf(np.zeros((96, 128, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="RGB"):
        tf(np.zeros((96, 128), dtype=np.uint8))
    with pytest.raises(ValueError, match="3 values"):
        eval_transform(96, (0.5,), (0.5,))


def test_a_per_image_seed_fixes_the_augmentation_wherever_it_runs() -> None:
    imgs = [_image(512, 384, seed=i) for i in range(3)]
    a = train_transform(128, 1.14, MEAN, STD)
    b = pickle.loads(pickle.dumps(train_transform(128, 1.14, MEAN, STD)))  # another worker's copy
    for img in imgs:
        first = a(img, seed=42)
        a(img)  # unseeded calls in between change nothing
        assert np.array_equal(first, a(img, seed=42)) and np.array_equal(first, b(img, seed=42))
    outs = [a(imgs[0], seed=s) for s in range(6)]
    assert all(not np.array_equal(x, y) for i, x in enumerate(outs) for y in outs[i + 1:])


def test_a_per_image_seed_leaves_the_transform_s_own_draws_alone() -> None:
    img, other = _image(512, 384, seed=1), _image(512, 384, seed=2)
    plain = train_transform(128, 1.14, MEAN, STD, seed=7)
    mixed = train_transform(128, 1.14, MEAN, STD, seed=7)
    expected = [plain(img) for _ in range(3)]
    got = []
    for _ in range(3):
        got.append(mixed(img))
        mixed(other, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(expected, got))


def _applied(tf, img: np.ndarray, **kw) -> tuple[bool, bool, bool]:
    """(flipped, CLAHE, ToGray) of the last call: albumentations keeps the params of an applied transform."""
    tf(img, **kw)
    (pipeline,) = tf._pipelines.values()
    return tuple(bool(pipeline.transforms[i].params) for i in (1, 2, 3))


def test_the_random_choices_of_one_image_are_independent() -> None:
    """albumentations' own seeding gives every transform the same first draw: ToGray would imply the flip."""
    img = _image(128, 96, seed=4)
    per_image = [_applied(train_transform(128, 1.14, MEAN, STD), img, seed=s) for s in range(300)]
    seeded = train_transform(128, 1.14, MEAN, STD, seed=3)
    per_call = [_applied(seeded, img) for _ in range(300)]
    for draws in (per_image, per_call):
        flips, clahe, gray = (np.array(c) for c in zip(*draws))
        assert 0.35 < flips.mean() < 0.65 and 0.1 < gray.mean() < 0.3
        assert (gray & ~flips).any() and (clahe & ~gray).any()
