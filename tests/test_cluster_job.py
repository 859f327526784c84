"""``ray job submit --working-dir . -- python ray_jobs/train.py ...`` against a local ``ray start --head``."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from cluster import REPO, SimulatedCluster
from jobs import assert_quiet

from camtrap.data.classes import COMPETITION_CLASSES
from camtrap.data.prepare import PrepareSettings, prepare_one
from camtrap.demo import SMALL_SIZES, make_demo_dataset

pytestmark = pytest.mark.timeout(600)

@pytest.fixture(scope="module")
def head_node():
    """A throwaway single-node cluster with 2 CPUs, started in this checkout as cluster.yaml starts its head
    in the synced one (tests/cluster.py: its own ports and temp dir, stopped by killing its process group;
    ``ray stop`` would also stop the test session's in-process Ray)."""
    head = SimulatedCluster(env={}, head_cpus=2, cwd=str(REPO)).start()
    try:
        yield head
    finally:
        head.shutdown()


def test_train_job_submit_on_local_cluster(head_node, tmp_path):
    data, prepared = tmp_path / "data", tmp_path / "prepared"
    make_demo_dataset(data, num_sequences=40, seed=3, image_sizes=SMALL_SIZES)
    for name in pd.read_csv(data / "train_metadata.csv")["file_name"]:
        assert prepare_one(name, str(data / "images"), str(prepared), PrepareSettings(long_side=96))["status"] == "ok"
    out = tmp_path / "run"
    run = head_node.submit([
        "ray_jobs/train.py", "--recipe", "cpu_tiny",
        "--set", "stages=[{name: s64, long_side: 64, batch_size: 4, epochs: 1, lr: 0.003}]",
        "--metadata", str(data / "train_metadata.csv"), "--labels", str(data / "train_labels.csv"),
        "--images-dir", str(prepared), "--out", str(out), "--num-workers", "2",
    ], timeout=540)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert "succeeded" in log, log[-4000:]
    # What the job prints: its start line, one line per epoch (not one per worker), its summary, no Ray internals.
    assert "train: 2 CPU workers" in log and "stage s64: best val_loss" in log
    assert sum("[s64] epoch 1/1" in line for line in log.splitlines()) == 1, log[-4000:]
    assert_quiet(log)
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert state["inference_long_side"] == 64 and len(state["classes"]) == 54


def test_a_job_submitted_without_working_dir_runs_the_checkout_the_head_started_in(head_node, tmp_path):
    """cluster.yaml's documented short form: `ray job submit -- python ray_jobs/<job>.py ...`."""
    labels = pd.DataFrame(0, index=pd.Index(["a", "b"], name="seq_id"), columns=list(COMPETITION_CLASSES))
    labels["empty"] = 1
    labels.reset_index().to_csv(tmp_path / "labels.csv", index=False)
    (labels * 0 + 0.5).reset_index().to_csv(tmp_path / "submission.csv", index=False)
    run = head_node.submit(["ray_jobs/evaluate.py", "--submission", str(tmp_path / "submission.csv"),
                            "--labels", str(tmp_path / "labels.csv")], timeout=300, working_dir=False)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    value = next(line for line in run.stdout.splitlines() if line.startswith("mean_binary_log_loss="))
    assert math.isclose(float(value.split("=")[1]), math.log(2), rel_tol=1e-12)  # every cell at 0.5 costs log 2
