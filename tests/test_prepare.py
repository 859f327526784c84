"""The Ray Data preparation job on real camera-trap JPEGs and on deliberately broken files."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from jobs import load_job
from PIL import Image, ImageOps
from test_imageio import bomb_png

from camtrap.data.imageio import resize_dims
from camtrap.data.prepare import PrepareSettings, prepare_images, prepare_one, prepared_decode
from camtrap.errors import InputError

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]



def pil_reference(path: Path, long_side: int) -> np.ndarray:
    """A direct PIL implementation of the rule, independent of camtrap."""
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    w, h = img.size
    ratio = max(w / long_side, h / long_side)
    return np.asarray(img.resize((int((w / ratio) // 16 * 16), int((h / ratio) // 16 * 16)), Image.LANCZOS))


@pytest.fixture(scope="module")
def real_metadata(real_dir, tmp_path_factory) -> str:
    labels = pd.read_csv(real_dir / "labels.csv")
    path = tmp_path_factory.mktemp("meta") / "real_metadata.csv"
    labels[["seq_id", "file_name"]].to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def prepared_real(ray_session, real_dir, real_metadata, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    summary, manifest = prepare_images(real_metadata, str(real_dir), str(out), PrepareSettings(long_side=512))
    return out, summary, manifest


def test_every_real_row_accounted_for(prepared_real, real_metadata):
    out, summary, manifest = prepared_real
    n = len(pd.read_csv(real_metadata))
    assert len(manifest) == n == summary.input_rows == summary.ok + summary.errors
    assert manifest["file_name"].is_unique
    errors = manifest[manifest["status"] == "error"].set_index("file_name")["error"]
    assert set(errors.index) == {
        "images/edge_cases/african_elephants_truncated_file.jpg",
        "images/edge_cases/error_img.JPG",
    }
    assert "truncated" in errors["images/edge_cases/african_elephants_truncated_file.jpg"]
    assert "empty file (0 bytes)" in errors["images/edge_cases/error_img.JPG"]
    on_disk = pd.read_parquet(out / "manifest.parquet")
    pd.testing.assert_frame_equal(on_disk, manifest)
    assert len(pd.read_csv(out / "manifest.csv")) == n


def test_real_outputs_follow_rule_and_match_pil(prepared_real, real_dir):
    out, _, manifest = prepared_real
    ok = manifest[manifest["status"] == "ok"]
    assert ok["orig_width"].max() == 3264  # the largest real frame went through
    for row in ok.itertuples():
        with Image.open(out / row.file_name) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            assert img.size == (row.width, row.height) == resize_dims(row.orig_width, row.orig_height, 512)
    # Pixels against a direct PIL reference, on a spread of files: within JPEG (q=95) tolerance of the
    # raw reference, and identical to the reference put through PIL's own JPEG encoder.
    for name in list(ok["file_name"])[::12]:
        ours = np.asarray(Image.open(out / name), dtype=np.float64)
        ref = pil_reference(real_dir / name, 512)
        assert ours.shape == ref.shape
        mse = np.mean((ours - ref) ** 2)
        assert 10 * np.log10(255**2 / max(mse, 1e-12)) > 34.0, name
        buf = io.BytesIO()
        Image.fromarray(ref).save(buf, format="JPEG", quality=95)
        assert np.array_equal(np.asarray(Image.open(buf)), ours.astype(np.uint8)), name


def test_real_edge_cases_become_correct_rgb(prepared_real, real_dir):
    out, _, manifest = prepared_real
    edge = "images/edge_cases/"
    bw = np.asarray(Image.open(out / f"{edge}african_elephants_bw.jpg"), dtype=np.int16)
    assert bw.shape == (384, 512, 3)
    assert np.abs(bw[..., 0] - bw[..., 1]).max() <= 3 and np.abs(bw[..., 1] - bw[..., 2]).max() <= 3
    rot = np.asarray(Image.open(out / f"{edge}african_elephants_with_exif_orientation.jpg"), dtype=np.int16)
    cmyk = np.asarray(Image.open(out / f"{edge}african_elephants_cmyk.jpg"), dtype=np.int16)
    assert rot.shape == cmyk.shape == (384, 512, 3)  # upright: landscape, not the stored portrait
    assert np.abs(rot - cmyk).mean() < 12
    row = manifest.set_index("file_name").loc[f"{edge}african_elephants_with_exif_orientation.jpg"]
    assert (row.orig_width, row.orig_height) == (2048, 1536)


def test_outputs_do_not_depend_on_parallelism(ray_session, prepared_real, real_dir, real_metadata, tmp_path):
    out, _, manifest = prepared_real
    names = list(manifest.loc[manifest["status"] == "ok", "file_name"])[::25]
    sub = tmp_path / "sub.csv"
    pd.DataFrame({"seq_id": names, "file_name": names}).to_csv(sub, index=False)
    prepare_images(str(sub), str(real_dir), str(tmp_path / "one_per_task"), rows_per_task=1)
    for name in names:
        single = prepare_one(name, str(real_dir), str(tmp_path / "single"), PrepareSettings())
        assert single["status"] == "ok"
        ref = (out / name).read_bytes()
        assert (tmp_path / "one_per_task" / name).read_bytes() == ref
        assert (tmp_path / "single" / name).read_bytes() == ref


def test_fast_folder_records_its_mode_and_is_byte_identical_across_parallelism(
    ray_session, prepared_real, real_dir, tmp_path
):
    exact_out, _, exact_manifest = prepared_real
    labels = pd.read_csv(real_dir / "labels.csv")
    names = list(labels.loc[labels["subset"].isin(["serengeti_fullres_tf", "speciesnet_fullres"]), "file_name"])
    meta = tmp_path / "full_size.csv"
    pd.DataFrame({"seq_id": names, "file_name": names}).to_csv(meta, index=False)
    fast = PrepareSettings(decode="fast")
    _, manifest = prepare_images(str(meta), str(real_dir), str(tmp_path / "fast"), fast)
    assert (manifest["status"] == "ok").all() and (manifest["decode"] == "fast").all()
    assert prepared_decode(str(tmp_path / "fast")) == "fast" and prepared_decode(str(exact_out)) == "exact"
    assert prepared_decode(str(real_dir)) is None  # raw images: no manifest
    sizes = exact_manifest.set_index("file_name").loc[names, ["width", "height"]]
    pd.testing.assert_frame_equal(manifest.set_index("file_name")[["width", "height"]], sizes)
    prepare_images(str(meta), str(real_dir), str(tmp_path / "one_per_task"), fast, rows_per_task=1)
    for name in names:
        assert prepare_one(name, str(real_dir), str(tmp_path / "single"), fast)["status"] == "ok"
        ref = (tmp_path / "fast" / name).read_bytes()
        assert (tmp_path / "one_per_task" / name).read_bytes() == ref == (tmp_path / "single" / name).read_bytes()
    # One folder, one mode: resuming or extending it in the other is refused, naming both.
    with pytest.raises(InputError, match="prepared with --decode fast; this run asks for --decode exact"):
        prepare_images(str(meta), str(real_dir), str(tmp_path / "fast"))
    with pytest.raises(InputError, match="prepared with --decode exact; this run asks for --decode fast"):
        prepare_images(str(meta), str(real_dir), str(exact_out), fast)
    # A folder prepared before the modes existed (no decode column) is exact.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    exact_manifest.drop(columns="decode").to_parquet(legacy / "manifest.parquet")
    assert prepared_decode(str(legacy)) == "exact"


def test_rerun_resumes_and_overwrite_redoes(ray_session, prepared_real, real_dir, real_metadata):
    out, first, _ = prepared_real
    some = out / "images/serengeti_fieldguide/aardvark-1.jpg"
    mtime = some.stat().st_mtime_ns
    again, _ = prepare_images(real_metadata, str(real_dir), str(out))
    assert again.processed == first.errors == 2  # only the failed files are retried
    assert again.skipped == first.ok and again.ok == first.ok
    assert some.stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="--overwrite"):
        prepare_images(real_metadata, str(real_dir), str(out), PrepareSettings(long_side=256))


def test_resume_redoes_a_deleted_output(ray_session, real_dir, tmp_path):
    names = ["images/serengeti_tutorial/PICT0500.JPG", "images/serengeti_tutorial/PICT0501.JPG"]
    meta = tmp_path / "m.csv"
    pd.DataFrame({"seq_id": ["t", "t"], "file_name": names}).to_csv(meta, index=False)
    out = tmp_path / "out"
    prepare_images(str(meta), str(real_dir), str(out))
    (out / names[1]).unlink()
    summary, _ = prepare_images(str(meta), str(real_dir), str(out))
    assert summary.processed == 1 and (out / names[1]).exists()
    summary, _ = prepare_images(str(meta), str(real_dir), str(out), overwrite=True)
    assert summary.processed == 2 and summary.ok == 2


def test_bad_files_are_recorded_and_the_job_goes_on(ray_session, tmp_path, capsys):
    images = tmp_path / "images"
    (images / "S1").mkdir(parents=True)
    Image.new("RGB", (800, 600), (20, 120, 40)).save(images / "S1" / "good.JPG", quality=90)
    (images / "S1" / "text.jpg").write_text("not an image\n")
    (images / "S1" / "bomb.png").write_bytes(bomb_png(20000, 20000))
    Image.new("RGBA", (300, 200), (200, 10, 10, 128)).save(images / "S1" / "alpha.png")
    (images / "S1" / "zero.JPG").write_bytes(b"")
    meta = tmp_path / "meta.csv"
    meta.write_text(
        "seq_id,file_name\n"
        "a,S1/good.JPG\nb,S1/text.jpg\nc,S1/bomb.png\nd,S1/alpha.png\ne,S1/zero.JPG\n"
        "f,S1/missing.JPG\ng,../outside.JPG\nh,S1/good.JPG\n"
    )
    job = load_job("prepare")
    argv = ["--metadata", str(meta), "--images-dir", str(images), "--out", str(tmp_path / "out")]
    assert job.main(argv) == 0
    printed = capsys.readouterr().out
    assert "8 input rows -> 2 ok, 6 errors" in printed
    assert job.main(argv + ["--fail-on-error"]) == 1
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert list(manifest["line"]) == list(range(2, 10))  # every input row once, in input order
    reason = dict(zip(manifest["seq_id"], manifest["error"]))
    status = dict(zip(manifest["seq_id"], manifest["status"]))
    assert status["a"] == status["d"] == "ok"
    assert "not a recognised image" in reason["b"] and "S1/text.jpg" in reason["b"]
    assert "decompression-bomb" in reason["c"]
    assert "empty file" in reason["e"]
    assert "file not found" in reason["f"]
    assert "escapes the images directory" in reason["g"]
    assert "duplicate file_name" in reason["h"]
    with Image.open(tmp_path / "out" / "S1" / "alpha.png") as img:  # same relative path, JPEG content
        assert img.format == "JPEG" and img.size == (512, 336)
    assert not os.path.exists(tmp_path / "outside.JPG")


@pytest.mark.parametrize(("rows", "expected"), [(156, [26] * 6), (171, [28, 29, 28, 29, 28, 29]), (3, [1, 1, 1])])
def test_blocks_come_in_whole_rounds_of_the_cpus(ray_session, rows, expected):
    """5 blocks on 2 CPUs would leave one idle in the last round: the count is rounded up to a multiple."""
    from camtrap.runtime import frame_dataset

    frame = pd.DataFrame({"file_name": [f"{i}.jpg" for i in range(rows)]})
    ds = frame_dataset(frame, rows_per_block=32, min_blocks=4, block_multiple=2)
    sizes = [len(b) for b in ds.iter_batches(batch_size=None, batch_format="pandas")]
    assert sorted(sizes) == sorted(expected) and sum(sizes) == rows
