"""The seed's resize rule and the decoder's handling of real and awkward files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from images import bomb_png, png_bytes
from PIL import Image

from camtrap.data.imageio import (
    FAST_DECODE_MAX_MAD,
    ImageDecodeError,
    decode_image,
    encode_jpeg,
    load_resized,
    resize_dims,
)


def seed_rule(w: int, h: int, long_side: int) -> tuple[int, int]:
    """The 2nd-place code's arithmetic, written out independently."""
    ratio = max(h / long_side, w / long_side)
    return int((w / ratio) // 16 * 16), int((h / ratio) // 16 * 16)


RULE_CASES = [
        (2048, 1536, 512, (512, 384)),  # 4:3 Serengeti
        (1920, 1080, 512, (512, 288)),  # 16:9
        (1536, 2048, 512, (384, 512)),  # portrait
        (3264, 2448, 512, (512, 384)),
        (766, 400, 512, (512, 256)),  # 267.4 -> floored to 256
        (64, 48, 512, (512, 384)),  # tiny: scaled up, as in the seed
        (40000, 30000, 512, (512, 384)),  # huge
        (2048, 1536, 360, (352, 256)),  # the seed's resnext101 inference size
        (2048, 1536, 296, (288, 208)),
]


@pytest.mark.parametrize("w, h, L, expected", RULE_CASES)
def test_resize_dims_matches_seed_rule(w, h, L, expected):
    assert resize_dims(w, h, L) == expected == seed_rule(w, h, L)


def test_resize_dims_sweep_agrees_with_seed_rule_and_is_multiple_of_16():
    rng = np.random.default_rng(0)
    for w, h in rng.integers(16, 5000, size=(500, 2)):
        for L in (256, 320, 360, 416, 480, 512):
            if min(w, h) * L // max(w, h) < 16:
                continue
            nw, nh = resize_dims(int(w), int(h), L)
            assert (nw, nh) == seed_rule(int(w), int(h), L)
            assert nw % 16 == 0 and nh % 16 == 0 and max(nw, nh) <= L


def test_resize_dims_extreme_aspect_is_a_clear_error():
    with pytest.raises(ImageDecodeError, match="aspect ratio too extreme"):
        resize_dims(4000, 10, 512)


def test_decode_modes_come_out_rgb():
    rgba = Image.new("RGBA", (32, 24), (10, 200, 30, 0))
    assert decode_image(png_bytes(rgba)).getpixel((0, 0)) == (10, 200, 30)
    pal = Image.new("P", (32, 24))
    pal.putpalette([255, 0, 0] * 256)
    assert decode_image(png_bytes(pal)).getpixel((5, 5)) == (255, 0, 0)
    arr16 = np.full((24, 32), 65535, dtype=np.uint16)
    arr16[0, 0] = 0
    arr16[0, 1] = 32896  # 128 * 257
    g16 = decode_image(png_bytes(Image.fromarray(arr16)))
    assert g16.mode == "RGB"
    assert g16.getpixel((0, 0)) == (0, 0, 0) and g16.getpixel((1, 0)) == (128, 128, 128)
    assert g16.getpixel((5, 5)) == (255, 255, 255)


def test_decode_errors_say_why():
    with pytest.raises(ImageDecodeError, match="empty file"):
        decode_image(b"")
    with pytest.raises(ImageDecodeError, match="not a recognised image"):
        decode_image(b"this is a text file, not a jpeg\n")
    jpg = encode_jpeg(Image.new("RGB", (640, 480), (1, 2, 3)))
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(jpg[: len(jpg) // 2])


def test_decompression_bomb_is_refused():
    data = bomb_png(20000, 20000)
    assert Image.open(io.BytesIO(bomb_png(200, 100))).size == (200, 100)
    with pytest.raises(ImageDecodeError, match="decompression-bomb"):
        decode_image(data)
    with pytest.raises(ImageDecodeError, match="exceeds the decompression-bomb limit of 1000"):
        decode_image(png_bytes(Image.new("L", (100, 100))), max_pixels=1000)


def test_real_edge_cases(real_dir):
    edge = real_dir / "images" / "edge_cases"
    ref, _ = load_resized((edge / "african_elephants_bw.jpg").read_bytes(), 512)
    assert ref.mode == "RGB" and ref.size == (512, 384)
    arr = np.asarray(ref)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()

    cmyk, size = load_resized((edge / "african_elephants_cmyk.jpg").read_bytes(), 512)
    rot, rsize = load_resized((edge / "african_elephants_with_exif_orientation.jpg").read_bytes(), 512)
    assert cmyk.mode == rot.mode == "RGB"
    assert size == rsize == (2048, 1536)  # the rotated file is stored 1536x2048 with orientation 6
    # Both derive from the same colour photograph: after conversion/rotation they must agree closely.
    diff = np.abs(np.asarray(cmyk, dtype=np.int16) - np.asarray(rot, dtype=np.int16))
    assert diff.mean() < 12, diff.mean()
    gray_of_rot = np.asarray(rot.convert("L"), dtype=np.int16)
    assert np.abs(gray_of_rot - arr[..., 0]).mean() < 12

    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image((edge / "african_elephants_truncated_file.jpg").read_bytes())
    with pytest.raises(ImageDecodeError, match="empty file"):
        decode_image((edge / "error_img.JPG").read_bytes())


def test_encode_jpeg_is_deterministic():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    assert encode_jpeg(img) == encode_jpeg(img.copy())


def _textured_jpeg(w: int, h: int, orientation: int = 1) -> bytes:
    """A JPEG of upright size ``w`` x ``h`` with fine detail (so a reduced decode differs from a full one);
    stored turned, with the EXIF tag that turns it back, when ``orientation`` swaps the sides."""
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([(xx * 7 + yy * 3) % 256, (xx ^ yy) % 256, (xx * yy) % 251], axis=-1).astype(np.uint8)
    img = Image.fromarray(arr)
    if orientation == 6:  # stored rotated 90 degrees counter-clockwise; the tag turns it back clockwise
        img = img.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("w, h, L, expected", [c for c in RULE_CASES if c[0] * c[1] < 10_000_000])
@pytest.mark.parametrize("orientation", [1, 6])
def test_fast_decode_gives_the_rule_s_sizes(w, h, L, expected, orientation):
    data = _textured_jpeg(w, h, orientation)
    exact, exact_orig = load_resized(data, L)
    fast, fast_orig = load_resized(data, L, decode="fast")
    assert fast.size == exact.size == expected and fast.mode == "RGB"
    assert fast_orig == exact_orig == (w, h)  # the upright original, not the reduced decode
    if min(w // expected[0], h // expected[1]) >= 4:  # room for a reduced DCT scale: it was used
        assert fast.tobytes() != exact.tobytes()


def test_fast_decode_sweep_of_sizes_and_long_sides():
    rng = np.random.default_rng(1)
    for w, h in rng.integers(40, 1400, size=(12, 2)):
        data = _textured_jpeg(int(w), int(h))
        for L in (64, 128, 296, 512):
            if min(w, h) * L // max(w, h) < 16:
                continue
            assert load_resized(data, L, decode="fast")[0].size == resize_dims(int(w), int(h), L)


def test_fast_decode_is_exact_where_there_is_nothing_to_reduce():
    png = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (600, 800, 3), dtype=np.uint8)))
    assert load_resized(png, 128, decode="fast")[0].tobytes() == load_resized(png, 128)[0].tobytes()
    small = _textured_jpeg(600, 450)  # less than twice the output size: decoded in full either way
    assert load_resized(small, 512, decode="fast")[0].tobytes() == load_resized(small, 512)[0].tobytes()
    with pytest.raises(ValueError, match="decode mode"):
        load_resized(small, 512, decode="quick")


def _real_gaps(real_dir, long_side: int) -> dict[str, float]:
    """Mean absolute difference fast vs exact, per decodable real image."""
    import pandas as pd

    gaps = {}
    for name in pd.read_csv(real_dir / "labels.csv")["file_name"]:
        data = (real_dir / name).read_bytes()
        try:
            exact, _ = load_resized(data, long_side)
        except ImageDecodeError:
            continue
        fast, _ = load_resized(data, long_side, decode="fast")
        assert fast.size == exact.size, name
        gaps[name] = float(np.abs(np.asarray(fast, np.int16) - np.asarray(exact, np.int16)).mean())
    return gaps


def test_fast_decode_stays_within_the_stated_gap_on_real_images(real_dir):
    at_512 = _real_gaps(real_dir, 512)
    full_size = {n: g for n, g in at_512.items() if "fullres" in n or "edge_cases" in n}
    assert sum(g > 0 for g in full_size.values()) >= 10  # frames of 2048 px and up were decoded reduced
    assert max(full_size.values()) <= FAST_DECODE_MAX_MAD, full_size
    assert np.mean(list(at_512.values())) <= FAST_DECODE_MAX_MAD
    at_128 = _real_gaps(real_dir, 128)  # the 766x400 field-guide frames are reduced too
    assert np.mean(list(at_128.values())) <= FAST_DECODE_MAX_MAD
