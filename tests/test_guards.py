"""Nothing wrong exits 0: diverged settings and runs, stale resumes, outputs over inputs, bad model files and
submission formats each end as one error line (exit 2) with no data lost or changed."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from jobs import load_job

from camtrap.bench import untrained_model_file
from camtrap.config.overrides import apply_overrides
from camtrap.config.recipe import RecipeError, load_recipe
from camtrap.data.classes import COMPETITION_CLASSES
from camtrap.errors import InputError
from camtrap.model_file import read_model_file, save_model_file
from camtrap.train.loop import TrainingDiverged, train_one_epoch

pytestmark = pytest.mark.timeout(600)

#: Real frames of ../shared/data/real (see conftest.real_dir), a sequence each.
FRAMES = {"zebra": "images/serengeti_fieldguide/zebra-1.jpg",
          "tutorial": "images/serengeti_tutorial/PICT0500.JPG"}


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("override", "field"), [
    ("stages.0.lr=.inf", "stages.0.lr"),
    ("optimizer.weight_decay=.inf", "optimizer.weight_decay"),
    ("stages.0.long_side=1000000", "stages.0.long_side"),
    ("stages.0.lr=100", "stages.0.lr"),
    ("stages.0.min_lr=.nan", "stages.0.min_lr"),
])
def test_non_finite_and_absurd_recipe_values_are_refused_naming_the_field(override, field):
    with pytest.raises(RecipeError, match=rf"{field}: "):
        apply_overrides(load_recipe("cpu_tiny"), [override])


class _NaNStep:
    """A train step whose loss is finite once, then NaN (what an LR of 1e30 does to SGD)."""

    def __init__(self):
        self.model, self.calls = torch.nn.Linear(1, 1), 0

    def __call__(self, batch):
        self.calls += 1
        return (1.0 if self.calls == 1 else float("nan")), 4


def test_a_non_finite_loss_stops_the_stage_naming_stage_epoch_and_step():
    with pytest.raises(TrainingDiverged, match=r"training diverged: stage s96, epoch 3, step 2: the loss is nan"):
        train_one_epoch(_NaNStep(), [{}] * 5, 5, where="stage s96, epoch 3, ")


def test_model_files_that_cannot_score_are_refused_naming_the_file(tmp_path):
    good = untrained_model_file(str(tmp_path / "good" / "model.pt"), 64)
    state = torch.load(good, weights_only=True)
    weights = {k: (v.clone().fill_(float("nan")) if v.is_floating_point() else v) for k, v in state["model"].items()}
    diverged = tmp_path / "diverged.pt"
    save_model_file(str(diverged), weights, state["recipe"], state["classes"], state["priors"], 64, state["mean"],
                    state["std"])
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(Path(good).read_bytes()[:1000])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    for path, reason in [(diverged, "hold NaN or infinity"), (truncated, "not a readable model file"),
                         (empty, "not a readable model file"), (other, "not a camtrap model file"),
                         (tmp_path / "missing.pt", "model file not found")]:
        with pytest.raises(InputError, match=reason) as info:
            read_model_file(str(path))
        assert str(path) in str(info.value)


def test_prepare_refuses_an_output_inside_the_images_folder(ray_session, real_dir, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(real_dir / "images" / "serengeti_fieldguide", images / "fieldguide")
    before = _hashes(images)
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"seq_id": ["a"], "file_name": ["fieldguide/zebra-1.jpg"]}).to_csv(meta, index=False)
    for out in (images, images / "prepared"):
        code = load_job("prepare").main(["--metadata", str(meta), "--images-dir", str(images), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and "--out is the images folder or inside it" in err, err
    assert _hashes(images) == before  # not one original touched


@pytest.fixture(scope="module")
def scoring(real_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("guards")
    pd.DataFrame({"seq_id": list(FRAMES), "file_name": list(FRAMES.values())}).to_csv(root / "meta.csv", index=False)
    model = untrained_model_file(str(root / "run" / "model.pt"), 64, seed=1)
    return root, model


def _predict(root: Path, model: str, real_dir: Path, *extra: str) -> list[str]:
    return ["--model", model, "--metadata", str(root / "meta.csv"), "--images-dir", str(real_dir),
            "--out", str(root / "submission.csv"), "--work-dir", str(root / "work"), *extra]


def test_predict_refuses_a_format_with_a_duplicate_seq_id_before_scoring(ray_session, scoring, real_dir, capsys):
    root, model = scoring
    fmt = pd.DataFrame(0.0, index=pd.Index(["zebra", "tutorial", "zebra"], name="seq_id"),
                       columns=list(COMPETITION_CLASSES)).reset_index()
    fmt.to_csv(root / "dup_format.csv", index=False)
    code = load_job("predict").main(_predict(root, model, real_dir, "--submission-format",
                                             str(root / "dup_format.csv"), "--work-dir", str(root / "dup_work")))
    err = capsys.readouterr().err
    assert code == 2 and "dup_format.csv: seq_id listed twice: ['zebra'] (lines [4])" in err, err
    assert not (root / "dup_work").exists()  # refused before any image was scored


def test_a_new_model_at_the_same_path_is_not_resumed_from_the_old_ones_results(ray_session, scoring, real_dir,
                                                                              capsys):
    root, model = scoring
    assert load_job("predict").main(_predict(root, model, real_dir)) == 0
    first = pd.read_csv(root / "submission.csv").set_index("seq_id")
    untrained_model_file(model, 64, seed=7)  # "train.py --overwrite": another model.pt at the same path
    capsys.readouterr()
    assert load_job("predict").main(_predict(root, model, real_dir)) == 2
    assert "model_sha256" in capsys.readouterr().err
    assert load_job("predict").main(_predict(root, model, real_dir, "--overwrite")) == 0
    second = pd.read_csv(root / "submission.csv").set_index("seq_id")
    assert np.abs(second.to_numpy() - first.to_numpy()).max() > 1e-3  # the new model's values, not the old ones
    assert np.isfinite(second.to_numpy()).all()


def test_a_link_out_of_the_images_folder_is_a_rejected_row_unless_links_are_followed(ray_session, tmp_path,
                                                                                    real_dir, monkeypatch):
    from camtrap.data.prepare import PrepareSettings, prepare_one

    images, outside = tmp_path / "images", tmp_path / "elsewhere"
    images.mkdir()
    outside.mkdir()
    shutil.copy(real_dir / FRAMES["zebra"], outside / "secret.jpg")
    (images / "link.jpg").symlink_to(outside / "secret.jpg")
    shutil.copy(real_dir / FRAMES["zebra"], images / "inside.jpg")
    (images / "inner_link.jpg").symlink_to(images / "inside.jpg")  # a link that stays inside is fine
    settings = PrepareSettings(long_side=64)
    record = prepare_one("link.jpg", str(images), str(tmp_path / "out"), settings)
    assert record["status"] == "error" and "leads outside the images folder" in record["error"]
    assert prepare_one("inner_link.jpg", str(images), str(tmp_path / "out"), settings)["status"] == "ok"
    monkeypatch.setenv("CAMTRAP_FOLLOW_LINKS", "1")
    assert prepare_one("link.jpg", str(images), str(tmp_path / "out2"), settings)["status"] == "ok"


def test_prepare_rejects_a_shifted_row_by_line_and_prepares_the_rest(ray_session, real_dir, tmp_path, capsys):
    """An unquoted comma in the first data row: pandas read 'S1/a' as its seq_id and 'b.jpg' as its file."""
    meta = tmp_path / "meta.csv"
    meta.write_text(f"seq_id,file_name,\nSEQ1,S1/a,b.jpg,\nzebra,{FRAMES['zebra']},\ntutorial,{FRAMES['tutorial']},\n")
    out = tmp_path / "prepared"
    code = load_job("prepare").main(["--metadata", str(meta), "--images-dir", str(real_dir), "--out", str(out),
                                     "--long-side", "64"])
    assert code == 0, capsys.readouterr().err
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False).set_index("line")
    assert manifest.loc[2, "status"] == "error" and "has 3 fields where the header has 2" in manifest.loc[2, "error"]
    assert list(manifest.loc[[3, 4], "seq_id"]) == ["zebra", "tutorial"]
    assert list(manifest.loc[[3, 4], "status"]) == ["ok", "ok"]  # the trailing commas cost nothing


def test_a_file_name_with_an_fsspec_chain_is_a_rejected_row():
    from camtrap.data.contract import normalize_file_name

    with pytest.raises(ValueError, match="contains '::'"):
        normalize_file_name("a.jpg::zip")


def test_ctrl_c_ends_a_job_with_how_to_resume_and_exit_130(capsys):
    from camtrap.errors import INTERRUPTED, exits_on_input_error

    @exits_on_input_error
    def main() -> int:
        raise KeyboardInterrupt

    assert main() == INTERRUPTED == 130
    assert capsys.readouterr().err.strip() == "interrupted; rerun the same command to resume"


@pytest.mark.parametrize(("flag", "value", "reason"), [("--long-side", "8", "must be at least 16"),
                                                       ("--rows-per-task", "0", "must be at least 1"),
                                                       ("--quality", "101", "between 1 and 100")])
def test_prepare_flags_out_of_range_are_refused_by_the_parser(flag, value, reason, capsys):
    with pytest.raises(SystemExit) as info:
        load_job("prepare").parse_args(["--metadata", "m.csv", "--images-dir", "i", "--out", "o", flag, value])
    assert info.value.code == 2 and reason in capsys.readouterr().err


def test_a_damaged_resume_part_is_set_aside_and_its_rows_redone(tmp_path, capsys):
    from camtrap.data.resume import PartLog

    log = PartLog(str(tmp_path / "state"), key="file_name", columns=["file_name", "status"])
    log.append(pd.DataFrame({"file_name": ["a.jpg", "b.jpg"], "status": ["ok", "ok"]}))
    log.flush()
    log.append(pd.DataFrame({"file_name": ["c.jpg"], "status": ["ok"]}))
    log.flush()
    first, second = sorted((tmp_path / "state").glob("part-*.parquet"))
    second.write_bytes(second.read_bytes()[:40])  # a copy cut short
    assert list(log.read()["file_name"]) == ["a.jpg", "b.jpg"]  # c.jpg is simply not done any more
    assert "damaged resume part" in capsys.readouterr().err and not second.exists()
    assert (tmp_path / "state" / f"{second.name}.damaged").exists() and first.exists()


def test_a_damaged_settings_file_is_refused_naming_it_and_overwrite_recovers(tmp_path):
    from camtrap.data.resume import PartLog

    log = PartLog(str(tmp_path / "work"), key="file_name", columns=["file_name"])
    log.pin_settings({"long_side": 512}, overwrite=False)
    (tmp_path / "work" / "settings.json").write_bytes(b'{"long_side": 5')
    with pytest.raises(InputError, match=r"settings.json: damaged .*rerun with --overwrite"):
        log.pin_settings({"long_side": 512}, overwrite=False)
    log.pin_settings({"long_side": 512}, overwrite=True)
    log.pin_settings({"long_side": 512}, overwrite=False)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOSPC])
def test_a_read_only_or_full_output_is_one_error_line_not_a_traceback(code, capsys):
    from camtrap.errors import exits_on_input_error

    @exits_on_input_error
    def main() -> int:
        raise OSError(code, os.strerror(code), "/data/out/manifest.parquet")

    assert main() == 2
    assert capsys.readouterr().err.startswith(f"error: /data/out/manifest.parquet: {os.strerror(code)}; fix that")

    @exits_on_input_error
    def bug() -> int:
        raise OSError(errno.EBADF, "Bad file descriptor")  # not the user's to fix: keeps its traceback

    with pytest.raises(OSError):
        bug()


def test_prepare_redoes_a_truncated_output_instead_of_trusting_it(ray_session, real_dir, tmp_path, capsys):
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"seq_id": list(FRAMES), "file_name": list(FRAMES.values())}).to_csv(meta, index=False)
    out = tmp_path / "prepared"
    argv = ["--metadata", str(meta), "--images-dir", str(real_dir), "--out", str(out), "--long-side", "64"]
    assert load_job("prepare").main(argv) == 0
    before = _hashes(out / "images")
    manifest = pd.read_parquet(out / "manifest.parquet").set_index("file_name")
    zebra = out / FRAMES["zebra"]
    assert manifest.loc[FRAMES["zebra"], "sha256"] == hashlib.sha256(zebra.read_bytes()).hexdigest()
    zebra.write_bytes(zebra.read_bytes()[:100])  # a disk error, or a copy cut short
    capsys.readouterr()
    assert load_job("prepare").main(argv) == 0
    assert "1 outputs were missing or truncated and were prepared again" in capsys.readouterr().out
    assert _hashes(out / "images") == before


def test_inputs_are_checked_before_ray_is_asked_for_and_a_finished_rerun_needs_none(ray_session, scoring, real_dir,
                                                                                     monkeypatch, capsys):
    root, model = scoring
    job, calls = load_job("predict"), []
    monkeypatch.setattr(job, "init_ray", lambda *a, **k: calls.append(a))  # the session's Ray does the work
    fmt = pd.DataFrame(0.0, index=pd.Index(list(FRAMES), name="seq_id"), columns=["zebra", "lion"]).reset_index()
    fmt.to_csv(root / "typo_format.csv", index=False)
    argv = _predict(root, model, real_dir, "--work-dir", str(root / "connect_work"))
    assert job.main([*argv, "--submission-format", str(root / "typo_format.csv")]) == 2
    assert "class columns differ" in capsys.readouterr().err and calls == []  # refused before Ray
    assert job.main(argv) == 0 and len(calls) == 1
    assert job.main(argv) == 0 and len(calls) == 1  # nothing left to score: no Ray at all
    assert "nothing to score" in capsys.readouterr().out
