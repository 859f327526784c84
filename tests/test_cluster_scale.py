"""Training and Tune as on a cluster: jobs submitted to a multi-node Ray whose head has 0 CPUs and whose
worker nodes declare GPUs, with every run folder on S3 (moto). See tests/cluster.py."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from camtrap.data import storage
from camtrap.data.prepare import PrepareSettings, prepare_one
from camtrap.demo import SMALL_SIZES, make_demo_dataset

pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parents[1]
#: cpu_tiny at 64 px, small batches: what matters here is where the work runs and where it is written.
TINY = ["--recipe", "cpu_tiny", "--set", "scaling.use_gpu=auto",
        "--set", "stages=[{name: s64, long_side: 64, batch_size: 4, epochs: 2, lr: 0.003}]"]


@pytest.fixture(scope="module")
def cluster(sim_cluster):
    return sim_cluster


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("clusterdata")
    make_demo_dataset(root / "data", num_sequences=40, seed=5, image_sizes=SMALL_SIZES)
    for name in pd.read_csv(root / "data" / "train_metadata.csv")["file_name"]:
        assert prepare_one(name, str(root / "data" / "images"), str(root / "prepared"),
                           PrepareSettings(long_side=96))["status"] == "ok"
    return root


def _tables(data: Path) -> list[str]:
    return ["--metadata", str(data / "data" / "train_metadata.csv"), "--labels", str(data / "data" / "train_labels.csv"),
            "--images-dir", str(data / "prepared")]


def test_train_job_runs_on_gpu_worker_nodes_with_its_run_on_s3(cluster, s3, data, monkeypatch):
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    out = s3.make_bucket("train-run") + "/run"
    run = cluster.submit(["ray_jobs/train.py", *TINY, *_tables(data), "--out", out])
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    # The plan asked for the (simulated) GPUs the worker nodes declare: none can land on the 0-CPU head.
    assert "2 GPU workers x {'CPU': 1.0, 'GPU': 1.0}" in log, log[-4000:]
    assert "no CUDA device" in log  # the fallback to CPU compute is said once
    for rel in ("model.pt", "recipe.yaml", "scaling.json", "metrics.csv", "stages/s64/best.pt", "ray_results/s64"):
        assert storage.exists(f"{out}/{rel}"), rel
    state = torch.load(io.BytesIO(storage.read_bytes(f"{out}/model.pt")), weights_only=True)
    assert state["inference_long_side"] == 64 and len(state["classes"]) == 54

    rerun = cluster.submit(["ray_jobs/train.py", *TINY, *_tables(data), "--out", out])
    assert rerun.returncode == 0 and "nothing to do, this run is already complete" in rerun.stdout + rerun.stderr


def test_a_worker_node_lost_mid_stage_costs_only_its_epoch(cluster, s3, data, monkeypatch):
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    out = s3.make_bucket("node-loss") + "/run"
    args = ["ray_jobs/train.py", *TINY, "--set", "stages.0.epochs=4", *_tables(data), "--out", out,
            "--max-failures", "3"]
    job = subprocess.Popen(cluster.job_command(args), env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    fs, inner = storage.get_fs(f"{out}/ray_results/s64")
    deadline = time.monotonic() + 400
    while not fs.glob(f"{inner}/*/checkpoint_*") and not fs.glob(f"{inner}/checkpoint_*"):
        assert job.poll() is None, job.stdout.read()[-4000:]
        assert time.monotonic() < deadline, "no checkpoint on S3 in time"
        time.sleep(2)
        fs.invalidate_cache()
    cluster.remove_node(cluster.nodes[0])  # a spot preemption: raylet and workers SIGKILLed
    replacement = cluster.add_node(num_cpus=2, num_gpus=1)  # what the autoscaler would start
    log, _ = job.communicate(timeout=600)
    assert job.returncode == 0, log[-4000:]
    history = pd.read_csv(io.BytesIO(storage.read_bytes(f"{out}/metrics.csv")))
    assert list(history["epoch"]) == [1, 2, 3, 4], history
    assert replacement in cluster.nodes


def test_a_sweep_on_worker_nodes_lives_on_s3_and_resumes_from_it(cluster, s3, data, monkeypatch):
    """The sweep's driver joins the cluster with --address (``ray job submit`` is shown by the train test;
    here, under job submit, every simulated node unpacks the job's working dir into the one shared
    session folder and the driver lost its working directory at the end of the sweep: an artifact of
    several raylets on one host)."""
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    out = s3.make_bucket("sweep") + "/sweep"
    cmd = [sys.executable, str(REPO / "ray_jobs" / "tune.py"), "--address", cluster.gcs_address, "--space",
           "cpu_smoke", "--recipe", "cpu_tiny", *_tables(data), "--out", out, "--num-samples", "2"]
    run = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=800, check=False)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    results = pd.read_csv(io.BytesIO(storage.read_bytes(f"{out}/results.csv")))
    assert len(results) == 2 and set(results["status"]) <= {"completed", "stopped_early"}, results
    fs, inner = storage.get_fs(f"{out}/trials")
    trials = [p for p in fs.ls(inner) if p.rstrip("/") != inner.rstrip("/")]
    assert len(trials) == 2, trials  # each trial's run folder on S3, not in a node's session folder
    again = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=400, check=False)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert len(pd.read_csv(io.BytesIO(storage.read_bytes(f"{out}/results.csv")))) == 2
    assert "tune: 2 trials" in again.stdout


def test_dry_run_reports_the_gpus_the_recipe_asks_for(cluster, data):
    base = [sys.executable, str(REPO / "ray_jobs" / "train.py"), "--recipe", "rx50_swsl", *_tables(data),
            "--out", "/tmp/never-written", "--address", cluster.gcs_address, "--dry-run",
            "--set", "validation={fraction: 0.2}"]
    two = subprocess.run([*base, "--num-workers", "2"], env=cluster.env, capture_output=True, text=True, timeout=300, check=False)
    assert two.returncode == 0, two.stdout + two.stderr
    assert "2 GPU workers x {'CPU': 1.0, 'GPU': 1.0}" in two.stdout and "lr x 0.25" in two.stdout
    assert "the cluster has it now" in two.stdout and "nothing was started" in two.stdout
    eight = subprocess.run(base, env=cluster.env, capture_output=True, text=True, timeout=300, check=False)
    assert eight.returncode == 2 and "8 workers need 8 GPUs" in eight.stderr, eight.stdout + eight.stderr
    assert not Path("/tmp/never-written").exists()


def _ingest_job(data: Path, cpus: int) -> list[str]:
    """A job that runs the training input pipeline where a GPU worker runs (the ingest bench's consumer,
    1 GPU, no CPU) over two epochs of the prepared demo, with ``cpus`` decode CPUs."""
    code = (
        "import json, numpy as np, ray\n"
        "from camtrap.bench.ingest import platform_epochs\n"
        "from camtrap.train.augment import train_transform\n"
        "from camtrap.train.dataset import load_training_table\n"
        "from camtrap.train.epochs import EpochTable\n"
        "ray.init()\n"
        f"t = load_training_table({str(data / 'data' / 'train_metadata.csv')!r}, "
        f"{str(data / 'data' / 'train_labels.csv')!r}, {str(data / 'prepared')!r})\n"
        "ref = ray.put(EpochTable.from_frame(t.frame, t.classes))\n"
        "run = ray.remote(platform_epochs).options(num_cpus=0, num_gpus=1)\n"
        f"records = ray.get(run.remote(ref, len(t.frame), {str(data / 'prepared')!r}, "
        "train_transform(64, 1.14, mean=None, std=None), 0, 2, 4, 'exact', "
        f"{float(cpus)}, 'cpu', np.zeros(3, np.uint8)))\n"
        "print('INGEST', json.dumps([r['images'] for r in records]))\n"
    )
    return ["-c", code]


def test_decode_tasks_run_on_a_cpu_only_node_while_the_consumer_keeps_its_gpu_node(cluster, data):
    """Issue 23, item 4: CPU-only nodes add decode capacity. With a CPU-only node beside the GPU nodes, the
    epoch's decode tasks run there too; the GPU consumer (a training worker's place) stays on a GPU node."""
    cpu_node = cluster.add_node(num_cpus=2, num_gpus=0)
    try:
        run = cluster.submit(_ingest_job(data, cpus=6), timeout=400)
        log = run.stdout + run.stderr
        printed = re.search(r"^INGEST (\[[^\]]*\])$", log, re.MULTILINE)  # not the echoed entrypoint
        assert run.returncode == 0 and printed, log[-4000:]
        images = json.loads(printed.group(1))
        assert len(images) == 2 and all(n > 0 for n in images)
        nodes = {n["node_id"]: n.get("resources_total", {}) for n in cluster.list_state("nodes")}
        cpu_only = next(i for i, r in nodes.items() if cpu_node.tag in r)
        tasks = cluster.list_state("tasks")
        decode = {t["node_id"] for t in tasks if "ReadEpoch" in t.get("name", "") and t.get("node_id")}
        consumer = {t["node_id"] for t in tasks if t.get("name", "").endswith("platform_epochs") and t.get("node_id")}
        assert cpu_only in decode, (decode, nodes)
        assert consumer and all(nodes[i].get("GPU", 0) >= 1 for i in consumer), (consumer, nodes)
    finally:
        cluster.remove_node(cpu_node)
