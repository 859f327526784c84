"""``ray job submit --working-dir . -- python ray_jobs/train.py ...`` against a local ``ray start --head``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import torch

from camtrap.data.prepare import PrepareSettings, prepare_one
from camtrap.demo import SMALL_SIZES, make_demo_dataset

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def head_node():
    """A throwaway single-node cluster, stopped by killing its own process group (``ray stop`` would
    also stop the test session's in-process Ray). Every port is its own: the session's Ray already
    holds the defaults (its dashboard agent listens on 52365; a second agent there never comes up,
    and job submission then fails with "No available agent")."""
    port, dash, agent = free_port(), free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)  # the session pins its own Ray there; this head must not inherit it
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", f"--port={port}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
         f"--dashboard-agent-listen-port={agent}",
         "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=2) as r:
                    json.load(r)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"ray start --head did not come up (exit code {proc.poll()})")
                time.sleep(1)
        yield address, env
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_train_job_submit_on_local_cluster(head_node, tmp_path):
    address, env = head_node
    data, prepared = tmp_path / "data", tmp_path / "prepared"
    make_demo_dataset(data, num_sequences=40, seed=3, image_sizes=SMALL_SIZES)
    for name in pd.read_csv(data / "train_metadata.csv")["file_name"]:
        assert prepare_one(name, str(data / "images"), str(prepared), PrepareSettings(long_side=96))["status"] == "ok"
    out = tmp_path / "run"
    cmd = [
        str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
        "python", "ray_jobs/train.py", "--recipe", "cpu_tiny",
        "--set", "stages=[{name: s64, long_side: 64, batch_size: 4, epochs: 1, lr: 0.003}]",
        "--metadata", str(data / "train_metadata.csv"), "--labels", str(data / "train_labels.csv"),
        "--images-dir", str(prepared), "--out", str(out), "--num-workers", "2",
    ]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=540, check=False)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert "succeeded" in log, log[-4000:]
    assert "stage s64: best val_loss" in log
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert state["inference_long_side"] == 64 and len(state["classes"]) == 54
