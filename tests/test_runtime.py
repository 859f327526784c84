"""One job, one Ray: a job's own Ray stays the one its processes find, with another Ray on the machine.

A throwaway ``ray start --head`` plays the second job's Ray (a whole second training job would take
minutes); a fresh interpreter plays the job, so the test session's own Ray is not in the picture.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from camtrap.runtime import free_port

BIN = os.path.dirname(sys.executable)

#: The job: init_ray as every job script calls it, then the state API from the driver and from a
#: detached actor (what Ray Train's placement-group cleaner is), then the same without the pin, then a
#: second init_ray after ray.shutdown() in the same process.
JOB = """
import json, os, ray
from ray.util.state import list_actors
from camtrap.runtime import init_ray

def probe():
    try:
        names = [a.class_name for a in list_actors(filters=[("state", "=", "ALIVE")])]
        return {"ray_address": os.environ.get("RAY_ADDRESS"), "actors": names}
    except Exception as e:
        return {"ray_address": os.environ.get("RAY_ADDRESS"), "error": f"{type(e).__name__}: {e}"}

@ray.remote(num_cpus=0)
class Cleaner:
    def probe(self):
        return probe()

init_ray(num_cpus=1)
out = {"gcs": ray.get_runtime_context().gcs_address}
cleaner = Cleaner.options(lifetime="detached", name="cleaner").remote()
out["actor"] = ray.get(cleaner.probe.remote())
out["driver"] = probe()
pinned = os.environ.pop("RAY_ADDRESS")
out["unpinned"] = probe()
os.environ["RAY_ADDRESS"] = pinned
ray.kill(cleaner)
ray.shutdown()
init_ray(num_cpus=1)
out["second_gcs"] = ray.get_runtime_context().gcs_address
out["second_ray_address"] = os.environ.get("RAY_ADDRESS")
ray.shutdown()
print("RESULT " + json.dumps(out))
"""


def _clean_env() -> dict[str, str]:
    """This environment without a Ray to join (the session's Ray may have pinned ``RAY_ADDRESS``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_GCS_SERVER_PORT")}
    return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}


def _raylet_of(port: int) -> bool:
    """Whether a raylet of the GCS on ``port`` runs (what Ray's own process scan finds)."""
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "raylet" in cmd and "--gcs-address=" in cmd and f":{port} " in f"{cmd} ":
            return True
    return False


@pytest.fixture(scope="module")
def other_ray():
    """A second local Ray (0 CPUs, every port its own, its own temp dir so ``ray_current_cluster``
    under /tmp/ray is untouched), stopped by killing its process group: never ``ray stop``, which
    would stop every Ray on the machine."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rayo", dir="/tmp")  # short: socket paths must fit 107 bytes
    ports = [f"--{flag}={free_port()}" for flag in (
        "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
        "metrics-export-port", "ray-client-server-port", "node-manager-port", "object-manager-port")]
    proc = subprocess.Popen(
        [os.path.join(BIN, "ray"), "start", "--head", "--block", "--num-cpus=0", f"--port={port}",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}", *ports],
        env={**_clean_env(), "RAY_AUTH_MODE": "disabled"}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not _raylet_of(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the second Ray did not come up (exit code {proc.poll()})")
            time.sleep(0.5)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=3)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its group still runs
        proc.wait(timeout=10)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def job(other_ray) -> dict:
    run = subprocess.run([sys.executable, "-c", JOB], env=_clean_env(), capture_output=True, text=True, check=False,
                         timeout=300)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, (run.stdout + run.stderr)[-4000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_without_the_pin_the_state_api_does_not_find_the_jobs_ray(job):
    """The failure this pin fixes: "Found multiple active Ray instances" (or, with a ``ray start``
    cluster recorded in /tmp/ray, an answer from that other cluster)."""
    assert "Cleaner" not in job["unpinned"].get("actors", []), job["unpinned"]


def test_driver_and_detached_actor_find_the_jobs_own_ray(job, other_ray):
    assert not job["gcs"].endswith(f":{other_ray}")
    for where in ("driver", "actor"):
        assert job[where]["ray_address"] == job["gcs"], where
        assert "Cleaner" in job[where].get("actors", []), (where, job[where])  # this Ray: the other has none


def test_after_shutdown_a_new_ray_is_started_and_pinned(job):
    assert job["second_gcs"] != job["gcs"]
    assert job["second_ray_address"] == job["second_gcs"]
