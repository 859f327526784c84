"""Shared fixtures: one in-process Ray for the whole session, the real test images, tiny data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")

REPO = Path(__file__).resolve().parents[1]
SHARED_REAL = REPO.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """``../shared/data/real``: real camera-trap JPEGs. Missing means a broken checkout: fail, never skip."""
    if not (SHARED_REAL / "labels.csv").is_file():
        pytest.fail(f"real test images not found at {SHARED_REAL} (expected ../shared/data/real beside the repo)")
    return SHARED_REAL


@pytest.fixture(scope="session")
def ray_session():
    """One in-process Ray (2 CPUs) per test session; started once because each start costs ~5 s."""
    import ray

    from camtrap.runtime import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3():
    """A moto S3 endpoint for the session (tests/cluster.py)."""
    from cluster import S3Endpoint

    endpoint = S3Endpoint()
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="session")
def sim_cluster(s3):
    """One multi-node Ray for the session's cluster tests: a head with 0 CPUs (like cluster.yaml's) and
    two worker nodes of 2 CPUs and 1 (simulated) GPU, every process able to reach ``s3``. A test that
    removes a node starts its replacement, as the autoscaler would."""
    from cluster import SimulatedCluster

    sim = SimulatedCluster(env=s3.env).start()
    try:
        sim.add_node(num_cpus=2, num_gpus=1)
        sim.add_node(num_cpus=2, num_gpus=1)
        yield sim
    finally:
        sim.shutdown()
