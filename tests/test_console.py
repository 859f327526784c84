"""What a job prints: its start line, one progress display and its summary, and none of Ray's internals."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from jobs import assert_quiet

from camtrap.console import Progress, drop_harmless
from camtrap.demo import SMALL_SIZES, make_demo_dataset

pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parents[1]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_one_line_every_n_seconds_off_a_terminal_and_redrawn_on_one():
    log = io.StringIO()
    p = Progress("predict", 10, every=0.0, stream=log)
    p.update(4)
    p.update(6)
    p.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("predict: 4/10 images (40%), ") and "ETA" in lines[0]
    assert lines[1].startswith("predict: 10/10 images (100%)") and lines[1].endswith("ETA -")
    quiet = io.StringIO()
    q = Progress("prepare", 10, every=3600.0, stream=quiet)
    q.update(5)
    q.close()
    assert quiet.getvalue() == ""  # a line per hour at most: the summary follows anyway
    tty = _Terminal()
    t = Progress("prepare", 2, stream=tty)
    t.update(1)
    t.update(1)
    t.close()
    assert tty.getvalue().count("\r") == 3 and tty.getvalue().endswith("\n")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("console")
    make_demo_dataset(root / "data", num_sequences=40, seed=21, image_sizes=SMALL_SIZES)
    return root


def test_prepare_prints_its_progress_and_summary_and_no_ray_internals(tiny):
    """The train and predict jobs' console is checked where they run anyway (test_cluster_job.py,
    test_cluster_scoring.py)."""
    data = tiny / "data"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own Ray, as on a laptop
    run = subprocess.run([sys.executable, str(REPO / "ray_jobs" / "prepare.py"), "--metadata",
                          str(data / "train_metadata.csv"), "--images-dir", str(data / "images"),
                          "--out", str(tiny / "prepared"), "--long-side", "96"],
                         capture_output=True, text=True, timeout=600, check=False,
                         env={**env, "CAMTRAP_PROGRESS_SECONDS": "0"})
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    n = len(pd.read_csv(data / "train_metadata.csv"))
    assert f"prepare: {n}/{n} images (100%)" in out and f"prepare: {n} input rows ->" in out
    assert_quiet(out)


def test_known_harmless_worker_lines_and_blocks_leave_the_console_and_nothing_else_does():
    """What the GPU host's console showed (issue 23): each rank's c10d hostname warning, and Ray Train's
    controller failing once to reach the autoscaling coordinator, with its traceback."""
    lines = [
        "[W1204 17:32:04.133800076 socket.cpp:207] [c10d] The hostname of the client socket cannot be retrieved. err=-3",
        "[s296] epoch 1/3  train_loss 0.0328",
        "Failed to send resource request for train-f0d767f3678847c7b3de89a6673b0c6b. If this only happens ...",
        "Traceback (most recent call last):",
        '  File "autoscaling_coordinator_client.py", line 58, in send_resource_request',
        "ray.exceptions.GetTimeoutError: Get timed out: some object(s) not ready.",
        "[s296] epoch 2/3  train_loss 0.0324",
        "Traceback (most recent call last):",
        "ValueError: a real error",
    ]
    assert drop_harmless(lines) == [lines[1], lines[6], lines[7], lines[8]]
