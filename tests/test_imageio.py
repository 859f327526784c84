"""The seed's resize rule and the decoder's handling of real and awkward files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from images import bomb_png, png_bytes
from PIL import Image

from camtrap.data.imageio import ImageDecodeError, decode_image, encode_jpeg, load_resized, resize_dims


def seed_rule(w: int, h: int, long_side: int) -> tuple[int, int]:
    """The 2nd-place code's arithmetic, written out independently."""
    ratio = max(h / long_side, w / long_side)
    return int((w / ratio) // 16 * 16), int((h / ratio) // 16 * 16)


@pytest.mark.parametrize(
    "w, h, L, expected",
    [
        (2048, 1536, 512, (512, 384)),  # 4:3 Serengeti
        (1920, 1080, 512, (512, 288)),  # 16:9
        (1536, 2048, 512, (384, 512)),  # portrait
        (3264, 2448, 512, (512, 384)),
        (766, 400, 512, (512, 256)),  # 267.4 -> floored to 256
        (64, 48, 512, (512, 384)),  # tiny: scaled up, as in the seed
        (40000, 30000, 512, (512, 384)),  # huge
        (2048, 1536, 360, (352, 256)),  # the seed's resnext101 inference size
        (2048, 1536, 296, (288, 208)),
    ],
)
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
