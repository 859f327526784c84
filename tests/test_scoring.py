"""Ray Data scoring against a plain single-process reference, the submission format, and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from jobs import load_job
from scipy.stats import gmean

from camtrap.bench import untrained_model_file
from camtrap.data.classes import COMPETITION_CLASSES
from camtrap.data.imageio import load_resized, resize_long_side
from camtrap.data.resume import PartLog
from camtrap.infer.predict import PARTS_DIR
from camtrap.infer.submission import SUBMISSION_EPS
from camtrap.train.models import create_classifier

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[1]
SEQUENCES = {
    "tutorial": ["images/serengeti_tutorial/PICT0500.JPG", "images/serengeti_tutorial/PICT0501.JPG",
                 "images/serengeti_tutorial/PICT0502.JPG"],
    "hippo_a": ["images/serengeti_fullres_tf/S1_E03_R3_PICT0038.jpeg", "images/serengeti_fullres_tf/S1_E03_R3_PICT0039.jpeg"],
    "elephants": ["images/edge_cases/african_elephants_bw.jpg", "images/edge_cases/african_elephants_cmyk.jpg",
                  "images/edge_cases/african_elephants_with_exif_orientation.jpg",
                  "images/edge_cases/african_elephants_truncated_file.jpg"],
    "zebra": ["images/serengeti_fieldguide/zebra-1.jpg"],
    "portrait_mix": ["images/speciesnet_fullres/ocelot.jpg", "images/gorongosa_fieldguide/baboon__baboon-trailcam-1.JPG"],
    "broken": ["images/edge_cases/error_img.JPG", "images/nope/missing.jpg"],
}



@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return [untrained_model_file(str(root / f"m{i}" / "model.pt"), long_side, seed=i)
            for i, long_side in enumerate((96, 64))]


@pytest.fixture(scope="module")
def scored(ray_session, models, real_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    rows = [(seq, f) for seq, files in SEQUENCES.items() for f in files]
    pd.DataFrame(rows, columns=["seq_id", "file_name"]).to_csv(root / "test_metadata.csv", index=False)
    rng = np.random.default_rng(0)
    seqs = list(SEQUENCES)
    rng.shuffle(seqs)
    cols = list(COMPETITION_CLASSES)
    rng.shuffle(cols)
    fmt = pd.DataFrame(0.0, index=pd.Index(seqs, name="seq_id"), columns=cols).reset_index()
    fmt.to_csv(root / "submission_format.csv", index=False)
    argv = [*(arg for m in models for arg in ("--model", m)),
            "--metadata", str(root / "test_metadata.csv"), "--images-dir", str(real_dir),
            "--out", str(root / "submission.csv"), "--submission-format", str(root / "submission_format.csv"),
            "--work-dir", str(root / "work"), "--batch-size", "4"]
    assert load_job("predict").main(argv) == 0
    return root, argv, fmt


def reference(models: list[str], real_dir: Path) -> dict[str, np.ndarray]:
    """Plain single-process scoring: forward, flip, sigmoid, gmean over images x flips, gmean over models."""
    per_model = []
    for path in models:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = create_classifier("resnet10t", num_classes=54)
        model.load_state_dict(state["model"])
        model.eval()
        mean = torch.tensor(state["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(state["std"]).view(1, 3, 1, 1)
        out = {}
        for seq, files in SEQUENCES.items():
            views = []
            for f in files:
                try:
                    img, _ = load_resized((real_dir / f).read_bytes(), 512)
                except (OSError, ValueError):
                    continue
                arr = np.asarray(resize_long_side(img, state["inference_long_side"]))
                x = (torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255 - mean) / std
                with torch.no_grad():
                    views.append(torch.sigmoid(model(x))[0].numpy())
                    views.append(torch.sigmoid(model(torch.flip(x, dims=(3,))))[0].numpy())
            if views:
                out[seq] = gmean(np.stack(views).astype(np.float64), axis=0)
        per_model.append(out)
    return {s: gmean(np.stack([m[s] for m in per_model]), axis=0) for s in per_model[0]}


def test_predictions_equal_a_plain_reference(scored, models, real_dir):
    root, _, _ = scored
    sub = pd.read_csv(root / "submission.csv").set_index("seq_id")
    ref = reference(models, real_dir)
    assert set(ref) == set(SEQUENCES) - {"broken"}
    for seq, probs in ref.items():
        got = sub.loc[seq, list(COMPETITION_CLASSES)].to_numpy(dtype=np.float64)
        np.testing.assert_allclose(got, np.clip(probs, SUBMISSION_EPS, 1 - SUBMISSION_EPS), atol=1e-5, rtol=0)


def test_submission_format_and_failed_sequences(scored, models):
    root, _, fmt = scored
    sub = pd.read_csv(root / "submission.csv")
    assert list(sub.columns) == list(fmt.columns)
    assert list(sub["seq_id"]) == list(fmt["seq_id"])
    assert sub["seq_id"].is_unique and not sub.isna().any().any()
    values = sub.drop(columns="seq_id").to_numpy()
    assert (values > 0).all() and (values < 1).all()
    failed = pd.read_csv(root / "work" / "failed_sequences.csv")
    assert list(failed["seq_id"]) == ["broken"]
    assert "empty file" in failed["reason"][0] and "file not found" in failed["reason"][0]
    priors = [torch.load(m, weights_only=True)["priors"] for m in models]
    expected = gmean(np.array(priors), axis=0)
    got = sub.set_index("seq_id").loc["broken", list(COMPETITION_CLASSES)].to_numpy(dtype=np.float64)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_resume_after_interruption_gives_the_same_submission(scored):
    root, argv, _ = scored
    first = pd.read_csv(root / "submission.csv")
    log = PartLog(str(root / "work" / PARTS_DIR), key="file_name", columns=[])
    done = log.read()
    for part in (root / "work" / PARTS_DIR).glob("part-*.parquet"):
        part.unlink()
    log.append(done.iloc[: len(done) // 2])  # as if killed after half of the images
    log.flush()
    (root / "submission.csv").unlink()
    assert load_job("predict").main(argv) == 0
    again = pd.read_csv(root / "submission.csv")
    # Same rows, columns and order; values equal to float32 forward precision (a conv's result can
    # change in the last bits with the batch it ran in, and the resumed run batches differently).
    assert list(again.columns) == list(first.columns) and list(again["seq_id"]) == list(first["seq_id"])
    np.testing.assert_allclose(again.drop(columns="seq_id"), first.drop(columns="seq_id"), rtol=1e-5, atol=1e-7)
    assert len(list((root / "work" / PARTS_DIR).glob("part-*.parquet"))) == 2  # only the missing half was scored
