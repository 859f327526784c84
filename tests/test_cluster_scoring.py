"""Offline scoring as on an autoscaling GPU cluster: predict.py submitted to Ray's fake autoscaler with every
input and output on S3 (moto), and a scoring node lost mid-run on the session's multi-node cluster.
Both must give the submission a local run gives. See tests/cluster.py."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cluster import REPO, SimulatedCluster
from jobs import assert_quiet, load_job

from camtrap.bench import untrained_model_file
from camtrap.bench.common import replicated_inputs
from camtrap.data import storage
from camtrap.demo import SMALL_SIZES, make_demo_dataset
from camtrap.infer.predict import PARTS_DIR

pytestmark = pytest.mark.timeout(900)

#: The fake autoscaler's one worker type: a single-GPU node, from zero to two (the issue's shape).
GPU_TYPE = {"gpu": {"resources": {"CPU": 1, "GPU": 1}, "max_workers": 2}}
SMALL_BLOCKS = ["--batch-size", "4", "--rows-per-task", "8"]


@pytest.fixture(scope="module")
def season(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("season")
    make_demo_dataset(root / "data", num_sequences=60, seed=13, image_sizes=SMALL_SIZES, test_fraction=0.5)
    untrained_model_file(str(root / "model.pt"), long_side=96)
    return root


@pytest.fixture(scope="module")
def local_submission(ray_session, season) -> pd.DataFrame:
    """The same season scored in-process on the test session's 2-CPU Ray: what every cluster run must equal."""
    out = season / "local" / "submission.csv"
    argv = ["--model", str(season / "model.pt"), "--metadata", str(season / "data" / "test_metadata.csv"),
            "--images-dir", str(season / "data" / "images"), "--out", str(out), *SMALL_BLOCKS]
    assert load_job("predict").main(argv) == 0
    return pd.read_csv(out)


def assert_same_submission(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert got["seq_id"].is_unique and list(got["seq_id"]) == list(expected["seq_id"])
    assert list(got.columns) == list(expected.columns)
    np.testing.assert_allclose(got.drop(columns="seq_id").to_numpy(np.float64),
                               expected.drop(columns="seq_id").to_numpy(np.float64), rtol=0, atol=1e-5)


def model_actor_nodes(cluster: SimulatedCluster, state: str | None = None) -> set[str]:
    """Node ids of the scoring job's placed model actors (Ray Data names them after the predictor class)."""
    return {a["node_id"] for a in cluster.list_state("actors")
            if "FlipTTAPredictor" in a.get("class_name", "") and a.get("node_id") and state in (None, a["state"])}


def node_resources(cluster: SimulatedCluster) -> dict[str, dict]:
    return {n["node_id"]: n["resources_total"] for n in cluster.list_state("nodes")}


def test_scoring_autoscales_gpu_nodes_from_zero_with_everything_on_s3(season, local_submission, s3, monkeypatch):
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    bucket = s3.make_bucket("scoring")
    fs, _ = storage.get_fs(bucket)
    fs.put(str(season / "data" / "images"), f"{bucket}/images", recursive=True)
    fs.put(str(season / "data" / "test_metadata.csv"), f"{bucket}/test_metadata.csv")
    fs.put(str(season / "model.pt"), f"{bucket}/models/model.pt")
    out = f"{bucket}/scored/submission.csv"

    cluster = SimulatedCluster(env={**s3.env, "CAMTRAP_PROGRESS_SECONDS": "0"}, head_cpus=2,
                               autoscaling=GPU_TYPE).start()
    try:
        assert len(cluster.alive_nodes()) == 1  # the head alone: GPU nodes start at zero
        run = cluster.submit(["ray_jobs/predict.py", "--model", f"{bucket}/models/model.pt",
                              "--metadata", f"{bucket}/test_metadata.csv", "--images-dir", f"{bucket}/images",
                              "--work-dir", f"{bucket}/scored/work", "--out", out, *SMALL_BLOCKS])
        log = run.stdout + run.stderr
        assert run.returncode == 0, log[-4000:]
        said = "\n".join(line for line in log.splitlines() if line.startswith("predict:"))
        # GPUs by default, because the autoscaler can add GPU nodes; the simulated GPUs have no CUDA.
        assert "model actors on GPU (auto: the autoscaler can add GPU nodes (up to 2 GPUs))" in said, said
        assert "1..2 actors" in said and "waiting for the autoscaler" in said and "no CUDA device" in said, said
        images = len(pd.read_csv(season / "data" / "test_metadata.csv"))
        assert f"predict: {images}/{images} images (100%)" in said, said  # the progress display
        assert_quiet(log)
        actor_nodes, resources = model_actor_nodes(cluster), node_resources(cluster)
        assert actor_nodes and all(resources[n].get("GPU") == 1 for n in actor_nodes), (actor_nodes, resources)
        assert_same_submission(pd.read_csv(io.BytesIO(storage.read_bytes(out))), local_submission)
        assert storage.exists(f"{bucket}/scored/work/{PARTS_DIR}/settings.json")
        # Idle GPU nodes go away (idle timeout 6 s here, 10 min in cluster.yaml).
        deadline = time.monotonic() + 120
        while len(cluster.alive_nodes()) > 1:
            assert time.monotonic() < deadline, f"idle GPU nodes were not terminated: {cluster.alive_nodes()}"
            time.sleep(2)
    finally:
        cluster.shutdown()


def test_a_scoring_node_lost_mid_run_costs_only_its_blocks(sim_cluster, season, local_submission, tmp_path):
    # Four hard-linked copies of the season (seq ids c<k>_<seq_id>): a run long enough to lose a node in.
    copies = 4
    _, metadata = replicated_inputs(str(season / "data" / "test_metadata.csv"), str(season / "data" / "images"),
                                    str(tmp_path), len(pd.read_csv(season / "data" / "test_metadata.csv")), copies)
    images = len(pd.read_csv(metadata))
    work, out = tmp_path / "work", tmp_path / "submission.csv"
    cmd = [sys.executable, str(REPO / "ray_jobs" / "predict.py"), "--address", sim_cluster.gcs_address,
           "--model", str(season / "model.pt"), "--metadata", metadata, "--images-dir", str(tmp_path / "images"),
           "--work-dir", str(work), "--out", str(out), "--actors-per-model", "1", "--batch-size", "2",
           "--rows-per-task", "4"]
    env = {**sim_cluster.env, "CAMTRAP_FLUSH_SECONDS": "0"}
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    busy: set[str] = set()
    while not busy or not list((work / PARTS_DIR).glob("part-*.parquet")):  # the actor up, and scoring
        assert job.poll() is None, job.stdout.read()[-4000:]
        assert time.monotonic() < deadline, "no model actor scoring in time"
        busy = busy or model_actor_nodes(sim_cluster, state="ALIVE")
        time.sleep(0.5)
    resources = node_resources(sim_cluster)
    victims = [n for n in sim_cluster.nodes if any(n.tag in resources.get(i, {}) for i in busy)]
    assert victims, (busy, resources)
    scored_at_loss = sum(len(pd.read_parquet(p)) for p in (work / PARTS_DIR).glob("part-*.parquet"))
    assert job.poll() is None and scored_at_loss < images, "the job ended before a node could be lost: give it more images"
    sim_cluster.remove_node(victims[0])  # a spot preemption: raylet, model actor and decode workers SIGKILLed
    sim_cluster.add_node(num_cpus=2, num_gpus=1)  # what the autoscaler would start
    log, _ = job.communicate(timeout=600)
    print(f"node loss: {scored_at_loss} of {images} images scored when the node went; the job exited {job.returncode}")
    if job.returncode != 0:  # the documented fallback: rerun with the same work dir
        rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert rerun.returncode == 0, (log + rerun.stdout + rerun.stderr)[-4000:]
    got = pd.read_csv(out)
    assert got["seq_id"].is_unique and len(got) == copies * len(local_submission)
    for k in range(copies):  # every copy of a sequence scored as the uninterrupted local run scored it
        part = got[got["seq_id"].str.startswith(f"c{k}_")].copy()
        part["seq_id"] = part["seq_id"].str.removeprefix(f"c{k}_")
        assert_same_submission(part.set_index("seq_id").loc[local_submission["seq_id"]].reset_index(),
                               local_submission)
