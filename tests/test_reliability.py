"""The platform's promises under bad input, killed workers and killed jobs (README: Reliability).

* Every awkward file of a field card goes through prepare, train and predict with its documented
  outcome, and every input row is accounted for in every output.
* A training worker killed mid-epoch is replaced and the run resumes from its last checkpoint.
* prepare and predict killed with SIGKILL and rerun give what an uninterrupted run gives.
* A finished job rerun is a no-op that says so; a crafted pickle never runs; the dashboard is local.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from images import bomb_png, gray16_png, palette_png, rgba_png
from jobs import load_job
from PIL import Image

from camtrap.bench import untrained_model_file
from camtrap.config.recipe import Recipe, load_recipe, recipe_yaml
from camtrap.data.classes import COMPETITION_CLASSES
from camtrap.data.prepare import STATE_DIR, PrepareSettings, prepare_images
from camtrap.demo import DEFAULT_SIZES, SMALL_SIZES, make_demo_dataset
from camtrap.errors import InputError
from camtrap.infer.predict import PARTS_DIR, predict
from camtrap.model_file import read_state_file
from camtrap.train.driver import run_training
from camtrap.train.models import load_trained

pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parents[1]
ODD = {"train": "S1/odd", "test": "S3/odd"}  # the awkward files of each split
# file -> what must become of it ("ok": decoded to RGB; otherwise a substring of the recorded reason).
AWKWARD = {
    "zero_byte.jpg": "empty file",
    "truncated.jpg": "truncated",
    "text.jpg": "not a recognised image format",  # a text file named .jpg
    "bomb.png": "decompression-bomb",
    "missing.jpg": "not found",
    "cmyk.jpg": "ok",
    "exif_rotated.jpg": "ok",
    "grayscale.jpg": "ok",
    "alpha.png": "ok",
    "palette.png": "ok",
    "gray16.png": "ok",
}
ESCAPING = "../outside.jpg"


def write_awkward_files(images: Path, real_dir: Path, folder: str) -> None:
    edge = real_dir / "images" / "edge_cases"
    odd = images / folder
    odd.mkdir(parents=True)
    shutil.copy(edge / "error_img.JPG", odd / "zero_byte.jpg")
    shutil.copy(edge / "african_elephants_truncated_file.jpg", odd / "truncated.jpg")
    shutil.copy(edge / "african_elephants_cmyk.jpg", odd / "cmyk.jpg")
    shutil.copy(edge / "african_elephants_with_exif_orientation.jpg", odd / "exif_rotated.jpg")
    shutil.copy(edge / "african_elephants_bw.jpg", odd / "grayscale.jpg")
    (odd / "text.jpg").write_text("DCIM index, not a photograph\n")
    (odd / "bomb.png").write_bytes(bomb_png(20000, 20000))
    (odd / "alpha.png").write_bytes(rgba_png())
    (odd / "palette.png").write_bytes(palette_png())
    (odd / "gray16.png").write_bytes(gray16_png())
    (images.parent / "outside.jpg").write_bytes((edge / "african_elephants_bw.jpg").read_bytes())


def add_awkward_rows(data: Path, split: str) -> pd.DataFrame:
    """Append one sequence per awkward file, an escaping path and a file listed twice; returns the rows."""
    md = pd.read_csv(data / f"{split}_metadata.csv", dtype=str)
    extra = [{"seq_id": f"ODD_{split}_{Path(n).stem}", "file_name": f"{ODD[split]}/{n}"} for n in AWKWARD]
    extra.append({"seq_id": f"ODD_{split}_escape", "file_name": ESCAPING})
    extra.append({"seq_id": f"ODD_{split}_twice", "file_name": f"{ODD[split]}/cmyk.jpg"})
    extra = pd.DataFrame(extra)
    pd.concat([md, extra], ignore_index=True).to_csv(data / f"{split}_metadata.csv", index=False)
    labels = pd.read_csv(data / f"{split}_labels.csv", dtype=str)
    rows = pd.DataFrame(0, index=range(len(extra)), columns=labels.columns[1:]).astype(str)
    rows.insert(0, "seq_id", extra["seq_id"])
    rows["elephant"] = "1"
    pd.concat([labels, rows], ignore_index=True).to_csv(data / f"{split}_labels.csv", index=False)
    return extra


def add_bad_label_rows(labels_path: Path, md_path: Path) -> list[str]:
    """A label of 2, one of ``yes``, and a seq_id labelled twice; returns the seq_ids involved."""
    labels = pd.read_csv(labels_path, dtype=str)
    bad = labels.iloc[:3].copy()
    bad["seq_id"] = ["BAD_two", "BAD_yes", labels.iloc[0]["seq_id"]]
    bad.loc[bad.index[0], "zebra"] = "2"
    bad.loc[bad.index[1], "zebra"] = "yes"
    pd.concat([labels, bad], ignore_index=True).to_csv(labels_path, index=False)
    md = pd.read_csv(md_path, dtype=str)
    first = md.iloc[0]["file_name"]
    images = md_path.parent / "images"
    names = [first.replace(".JPG", f"_{s}.JPG") for s in ("two", "yes")]
    for name in names:
        shutil.copy(images / first, images / name)
    more = pd.DataFrame({"seq_id": ["BAD_two", "BAD_yes"], "file_name": names})
    pd.concat([md, more], ignore_index=True).to_csv(md_path, index=False)
    return ["BAD_two", "BAD_yes"]


def tiny_recipe(epochs: int = 1, stages: int = 1) -> Recipe:
    data = load_recipe("cpu_tiny").to_dict()
    data["stages"] = data["stages"][:stages]
    for s in data["stages"]:
        s.update(epochs=epochs, long_side=64, warmup_epochs=0)
    data["validation"] = {"fraction": 0.3, "seed": 0}
    return Recipe.from_dict(data)


@pytest.fixture(scope="module")
def field(ray_session, real_dir, tmp_path_factory):
    """Demo data plus every awkward file and row of a field card, prepared, trained and scored once."""
    root = tmp_path_factory.mktemp("field")
    data = root / "data"
    make_demo_dataset(data, num_sequences=90, seed=3, species=("zebra", "elephant"), image_sizes=SMALL_SIZES)
    for folder in ODD.values():
        write_awkward_files(data / "images", real_dir, folder)
    extra = {split: add_awkward_rows(data, split) for split in ("train", "test")}
    bad_label_seqs = add_bad_label_rows(data / "train_labels.csv", data / "train_metadata.csv")
    metadata = [str(data / "train_metadata.csv"), str(data / "test_metadata.csv")]
    prep_args = ["--metadata", metadata[0], "--metadata", metadata[1], "--images-dir", str(data / "images"),
                 "--out", str(root / "prepared"), "--long-side", "128"]
    assert load_job("prepare").main(prep_args) == 0
    train_args = ["--recipe", str(root / "recipe.yaml"), "--metadata", metadata[0],
                  "--labels", str(data / "train_labels.csv"), "--images-dir", str(root / "prepared"),
                  "--out", str(root / "run"), "--num-workers", "2"]
    (root / "recipe.yaml").write_text(recipe_yaml(tiny_recipe()))
    assert load_job("train").main(train_args) == 0
    model = str(root / "run" / "model.pt")
    # Scored from the raw images: the decode errors happen inside the scoring job itself.
    predict_args = ["--model", model, "--metadata", metadata[1], "--images-dir", str(data / "images"),
                    "--out", str(root / "submission.csv"), "--batch-size", "8"]
    assert load_job("predict").main(predict_args) == 0
    return {"root": root, "data": data, "extra": extra, "bad_labels": bad_label_seqs,
            "args": {"prepare": prep_args, "train": train_args, "predict": predict_args}}


def test_prepare_accounts_for_every_row_with_its_reason(field):
    data, root = field["data"], field["root"]
    manifest = pd.read_parquet(root / "prepared" / "manifest.parquet")
    n_input = sum(len(pd.read_csv(data / f"{s}_metadata.csv")) for s in ("train", "test"))
    assert len(manifest) == n_input  # one row per input row, the rejected ones included
    for split in ("train", "test"):
        seqs = manifest.set_index("seq_id")
        for name, outcome in AWKWARD.items():
            row = seqs.loc[f"ODD_{split}_{Path(name).stem}"]
            if outcome == "ok":
                assert row["status"] == "ok", (name, row["error"])
                assert (row["width"] % 16, row["height"] % 16) == (0, 0) and max(row["width"], row["height"]) == 128
            else:
                assert row["status"] == "error" and outcome in row["error"], (name, row["error"])
        assert "escapes the images directory" in seqs.loc[f"ODD_{split}_escape", "error"]
        assert "duplicate file_name" in seqs.loc[f"ODD_{split}_twice", "error"]
    assert not (root / "outside.jpg").exists()
    # Missing demo frames referenced by the bad-label rows are errors too, not crashes.
    assert (manifest["status"] == "ok").sum() + (manifest["status"] == "error").sum() == n_input
    out = np.asarray(Image.open(root / "prepared" / ODD["train"] / "gray16.png"))  # JPEG bytes under the input's name
    assert out.ndim == 3 and out.shape[2] == 3 and out.max() > 200 and out.min() < 50  # the ramp survived


def test_training_records_every_row_it_could_not_use(field):
    root = field["root"]
    rejected = pd.read_csv(root / "run" / "rejected_rows.csv", dtype=str).fillna("")
    text = rejected.to_string()
    for name, outcome in AWKWARD.items():
        if outcome != "ok":
            assert f"{ODD['train']}/{name}" in text, name
    reasons = rejected.groupby("seq_id")["reason"].agg(" | ".join)
    assert "label value '2' is not 0 or 1" in reasons["BAD_two"]
    assert "label value 'yes' is not 0 or 1" in reasons["BAD_yes"]
    assert rejected["reason"].str.contains("duplicate seq_id").any()
    assert rejected["reason"].str.contains("escapes the images directory").any()
    _, meta = load_trained(str(root / "run" / "model.pt"))
    assert meta["classes"] == list(COMPETITION_CLASSES)
    metrics = pd.read_csv(root / "run" / "metrics.csv")
    assert np.isfinite(metrics["val_metric"]).all()


def test_predict_gives_every_sequence_once_and_names_the_failures(field):
    root, data = field["root"], field["data"]
    sub = pd.read_csv(root / "submission.csv", dtype={"seq_id": str})
    md = pd.read_csv(data / "test_metadata.csv", dtype=str)
    assert sub["seq_id"].is_unique
    assert set(sub["seq_id"]) == set(md["seq_id"])  # every input sequence, the escaping one included
    assert ((sub.iloc[:, 1:] > 0) & (sub.iloc[:, 1:] < 1)).all().all()
    failed = pd.read_csv(root / "submission_work" / "failed_sequences.csv").set_index("seq_id")["reason"]
    for name, outcome in AWKWARD.items():
        seq = f"ODD_test_{Path(name).stem}"
        if outcome == "ok":
            assert seq not in failed.index, (name, failed.get(seq))
        else:
            assert outcome in failed[seq], (name, failed[seq])
    assert "escapes the images directory" in failed["ODD_test_escape"]


def test_rerunning_finished_jobs_is_a_fast_no_op_that_says_so(field, capsys):
    root = field["root"]
    model = root / "run" / "model.pt"
    before = (model.stat().st_mtime_ns, (root / "run" / "metrics.csv").stat().st_mtime_ns)
    capsys.readouterr()
    assert load_job("prepare").main(field["args"]["prepare"]) == 0
    out = capsys.readouterr().out
    failing = 2 * sum(outcome != "ok" for outcome in AWKWARD.values())  # per split; rejected rows are not retried
    assert "nothing new to do" in out and f"{failing} files that failed before were retried" in out, out
    start = time.perf_counter()
    assert load_job("train").main(field["args"]["train"]) == 0
    train_seconds = time.perf_counter() - start
    assert "nothing to do" in capsys.readouterr().out
    assert (model.stat().st_mtime_ns, (root / "run" / "metrics.csv").stat().st_mtime_ns) == before
    assert train_seconds < 15, train_seconds  # no trainer started: a fit alone takes 15-20 s here
    sub_before = (root / "submission.csv").read_bytes()
    assert load_job("predict").main(field["args"]["predict"]) == 0
    assert "nothing to score" in capsys.readouterr().out
    assert (root / "submission.csv").read_bytes() == sub_before


def test_a_run_dir_refuses_another_recipe(field, capsys):
    args = list(field["args"]["train"])
    other = field["root"] / "other.yaml"
    recipe = tiny_recipe().to_dict()
    recipe["stages"][0]["lr"] = 0.01
    other.write_text(yaml.safe_dump(recipe, sort_keys=False))
    args[args.index("--recipe") + 1] = str(other)
    capsys.readouterr()
    assert load_job("train").main(args) == 2
    err = capsys.readouterr().err
    assert "another recipe" in err and "stages.0.lr: 0.002 -> 0.01" in err and "--overwrite" in err


@pytest.mark.parametrize("job", ["prepare", "train", "predict"])
def test_file_level_input_errors_exit_2_with_the_file_named(field, tmp_path, job, capsys):
    empty = tmp_path / "empty_metadata.csv"
    empty.write_text("")
    args = list(field["args"][job])
    args[args.index("--metadata") + 1] = str(empty)
    if job == "prepare":
        args = args[: args.index("--metadata", args.index("--metadata") + 1)] + args[
            args.index("--metadata", args.index("--metadata") + 1) + 2 :]
    args[args.index("--out") + 1] = str(tmp_path / "out")
    capsys.readouterr()
    assert load_job(job).main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(empty) in err and "Traceback" not in err


@pytest.mark.parametrize(
    "header_change, reason",
    [(("zebra", "unicorn"), "unicorn"), (("zebra", None), "zebra")],
    ids=["unknown-class-column", "missing-class-column"],
)
def test_labels_with_a_wrong_class_column_are_refused_by_train(field, tmp_path, header_change, reason, capsys):
    """Only a recipe that asks for the competition's 54 classes refuses another list, and says how to train it."""
    labels = pd.read_csv(field["data"] / "train_labels.csv", dtype=str)
    old, new = header_change
    labels = labels.rename(columns={old: new}) if new else labels.drop(columns=[old])
    path = tmp_path / "train_labels.csv"
    labels.to_csv(path, index=False)
    args = list(field["args"]["train"])
    args[args.index("--labels") + 1] = str(path)
    args[args.index("--out") + 1] = str(tmp_path / "run")
    capsys.readouterr()
    assert load_job("train").main([*args, "--set", "classes=competition"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and reason in err and "--set classes=auto" in err
    assert len(err.strip().splitlines()) == 1, err


# ------------------------------------------------------------------------------------------------ faults


def _alive_train_worker_pids() -> set[int]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")], detail=True)
    return {a.pid for a in actors if a.pid}


def test_a_killed_training_worker_is_replaced_and_the_run_completes(field, tmp_path):
    """SIGKILL one DDP worker after the first checkpoint; max_failures=1 restarts from it."""
    root, data = field["root"], field["data"]
    recipe = tiny_recipe(epochs=4)
    out = tmp_path / "run"
    outcome: dict = {}

    def train() -> None:
        try:
            outcome["summary"] = run_training(recipe, str(data / "train_metadata.csv"), str(data / "train_labels.csv"),
                                              str(root / "prepared"), str(out), num_workers=2, max_failures=1)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = e

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    stage_dir = out / "ray_results" / recipe.stages[0].name
    deadline = time.monotonic() + 300
    while not list(stage_dir.glob("checkpoint_*")) and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.2)
    assert list(stage_dir.glob("checkpoint_*")), "no checkpoint appeared"
    first = _alive_train_worker_pids()
    assert len(first) == 2
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    assert not (out / "stages" / recipe.stages[0].name / "best.pt").exists()  # killed mid-stage
    replaced = set()
    while thread.is_alive() and not replaced:
        replaced = _alive_train_worker_pids() - first
        time.sleep(0.2)
    thread.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    assert replaced, "the worker group was not restarted"
    history = read_state_file(str(out / "stages" / recipe.stages[0].name / "best.pt"))["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]  # each epoch once: resumed, not restarted
    _, meta = load_trained(str(out / "model.pt"))
    assert meta["inference_long_side"] == 64


def _driver_env() -> dict:
    """A second driver on the test session's cluster, flushing results every half second."""
    import ray

    return {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, "CAMTRAP_FLUSH_SECONDS": "0.5",
            "PYTHONPATH": str(REPO / "src")}


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, f"the job ended before it could be killed:\n{proc.stdout.read()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def full_size(ray_session, tmp_path_factory):
    """Full-size JPEGs: slow enough to decode that a job can be killed half way."""
    root = tmp_path_factory.mktemp("full")
    make_demo_dataset(root / "data", num_sequences=70, seed=4, image_sizes=DEFAULT_SIZES)
    return root


def test_prepare_killed_and_rerun_equals_an_uninterrupted_run(full_size):
    data = full_size / "data"
    metadata = str(data / "train_metadata.csv")
    ref_summary, ref = prepare_images(metadata, str(data / "images"), str(full_size / "ref"), PrepareSettings(long_side=256))
    out = full_size / "killed"
    cmd = [sys.executable, str(REPO / "ray_jobs" / "prepare.py"), "--metadata", metadata,
           "--images-dir", str(data / "images"), "--out", str(out), "--long-side", "256", "--rows-per-task", "4"]
    proc = subprocess.Popen(cmd, env=_driver_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _kill_when(proc, lambda: len(list((out / STATE_DIR).glob("part-*.parquet"))) >= 1)
    assert not (out / "manifest.parquet").exists()
    rerun = subprocess.run(cmd, env=_driver_env(), capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    done_before = int(re.search(r"(\d+) already done", rerun.stdout).group(1))
    assert 0 < done_before < ref_summary.input_rows, rerun.stdout[-2000:]  # it resumed, not started over
    got = pd.read_parquet(out / "manifest.parquet")
    pd.testing.assert_frame_equal(got, ref)
    assert (got["status"] == "ok").all()

    def images(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*.JPG")}

    expected = images(full_size / "ref")
    assert len(expected) == len(ref)
    assert images(out) == expected  # the same files, byte for byte: nothing lost, nothing extra


def test_predict_killed_and_rerun_equals_an_uninterrupted_run(full_size, tmp_path):
    data = full_size / "data"
    model = untrained_model_file(str(tmp_path / "m" / "model.pt"), long_side=224)
    metadata = str(data / "train_metadata.csv")
    _, ref = predict([model], metadata, str(data / "images"), str(tmp_path / "ref.csv"), batch_size=8)
    out = tmp_path / "killed.csv"
    cmd = [sys.executable, str(REPO / "ray_jobs" / "predict.py"), "--model", model, "--metadata", metadata,
           "--images-dir", str(data / "images"), "--out", str(out), "--batch-size", "8", "--rows-per-task", "8"]
    parts = tmp_path / "killed_work" / PARTS_DIR
    proc = subprocess.Popen(cmd, env=_driver_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _kill_when(proc, lambda: len(list(parts.glob("part-*.parquet"))) >= 1)
    assert not out.exists()
    scored_before = sum(len(pd.read_parquet(p)) for p in parts.glob("part-*.parquet"))
    rerun = subprocess.run(cmd, env=_driver_env(), capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    got = pd.read_csv(out, dtype={"seq_id": str})
    n_images = len(pd.read_csv(metadata))
    assert 0 < scored_before < n_images
    assert f"{n_images - scored_before} images scored this run" in rerun.stdout
    assert list(got["seq_id"]) == list(ref["seq_id"]) and got["seq_id"].is_unique  # none lost or doubled
    np.testing.assert_allclose(got.iloc[:, 1:].to_numpy(), ref.iloc[:, 1:].to_numpy(), rtol=1e-5, atol=1e-7)


def test_folder_scoring_killed_and_rerun_equals_an_uninterrupted_run(full_size, tmp_path):
    """No metadata: sequences from the folder, every field format; killed and rerun, the same outputs."""
    images = str(full_size / "data" / "images")
    model = untrained_model_file(str(tmp_path / "m" / "model.pt"), long_side=64)
    fmt = ["csv", "megadetector"]
    predict([model], None, images, str(tmp_path / "ref"), batch_size=8, formats=fmt)
    out = tmp_path / "killed"
    cmd = [sys.executable, str(REPO / "ray_jobs" / "predict.py"), "--model", model, "--images-dir", images,
           "--out", str(out), "--batch-size", "8", "--rows-per-task", "8", "--format", "csv", "--format", "megadetector"]
    parts = tmp_path / "killed_work" / PARTS_DIR
    proc = subprocess.Popen(cmd, env=_driver_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _kill_when(proc, lambda: len(list(parts.glob("part-*.parquet"))) >= 1)
    assert not (out / "predictions.csv").exists()
    scored_before = sum(len(pd.read_parquet(p)) for p in parts.glob("part-*.parquet"))
    rerun = subprocess.run(cmd, env=_driver_env(), capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    n_images = len(pd.read_csv(out / "sequences.csv"))
    assert 0 < scored_before < n_images
    assert f"{n_images - scored_before} images scored this run" in rerun.stdout
    for name in ("sequences.csv", "predictions.csv"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    got, ref = (json.loads((d / "megadetector.json").read_text()) for d in (out, tmp_path / "ref"))
    assert got["images"] == ref["images"] and len(got["images"]) == n_images


# ---------------------------------------------------------------------------------------------- security


class _Payload:
    """Unpickling this runs ``touch MARKER``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["model.pt", "best.pt"])
def test_a_crafted_pickle_checkpoint_is_refused_and_never_runs(tmp_path, kind, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / kind
    torch.save({"format": "camtrap.model/1", "model": _Payload(marker)}, evil)
    with pytest.raises(InputError, match=f"{evil}: refused: not a weights-only checkpoint"):
        read_state_file(str(evil))
    with pytest.raises(InputError, match="refused"):
        load_trained(str(evil))
    assert not marker.exists()
    # The same file given to the scoring job: a one-line error, no traceback, no payload.
    md = tmp_path / "m.csv"
    md.write_text("seq_id,file_name\ns1,a.jpg\n")
    assert load_job("predict").main(["--model", str(evil), "--metadata", str(md), "--images-dir", str(tmp_path),
                                     "--out", str(tmp_path / "s.csv")]) == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()
    # The control: plain torch.load would have run it.
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_every_torch_load_in_the_package_is_weights_only():
    calls = []
    for path in (REPO / "src" / "camtrap").rglob("*.py"):
        text = path.read_text()
        start = 0
        while (i := text.find("torch.load(", start)) >= 0:
            depth, end = 0, i + len("torch.load")
            for end in range(i + len("torch.load"), len(text)):  # to the matching parenthesis
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            calls.append((path.name, text[i:end + 1]))
            start = i + 1
    assert calls, "no torch.load found: the check looks in the wrong place"
    assert all("weights_only=True" in call for _, call in calls), calls


def test_the_local_dashboard_listens_on_localhost_only(ray_session):
    import ray

    url = ray._private.worker.global_worker.node.address_info["webui_url"]
    assert url.split(":")[0] == "127.0.0.1", url
