"""Starting or joining Ray, in one place, for every job script and test.

* With no address (and no ``RAY_ADDRESS``), Ray starts in-process: the laptop and CI case.
* With ``--address auto`` or a ``ray job submit`` driver, it joins the running cluster.

In both cases the ``camtrap`` package is shipped to the workers through the runtime environment
(``py_modules``), so cluster nodes need only the third-party dependencies, not this project installed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import camtrap

#: Environment every Ray worker of ours gets: albumentations must not call PyPI at import.
WORKER_ENV = {"NO_ALBUMENTATIONS_UPDATE": "1"}


def package_dir() -> str:
    """Directory of the imported ``camtrap`` package (what ``py_modules`` ships)."""
    return str(Path(camtrap.__file__).resolve().parent)


def runtime_env() -> dict:
    return {"py_modules": [package_dir()], "env_vars": dict(WORKER_ENV)}


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True,
             include_dashboard: bool = True):
    """Start or join Ray once; a no-op when this process is already connected.

    ``num_cpus`` and ``include_dashboard`` only apply to a Ray started here. The dashboard of a local
    Ray binds to 127.0.0.1 (never another interface) and is on by default: besides showing jobs, it
    serves the state API that Ray Train's placement-group cleaner needs. Without it, a Tune trial
    stopped early leaks its workers' placement group, and the next trial waits for CPUs forever.
    It costs about 2 s at start and no measurable CPU when idle.
    """
    import ray

    os.environ.update(WORKER_ENV)
    if ray.is_initialized():
        return ray.get_runtime_context()
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict = {"runtime_env": runtime_env(), "log_to_driver": True}
    if address:
        kwargs["address"] = address
    else:
        kwargs.update(num_cpus=num_cpus, include_dashboard=include_dashboard, dashboard_host="127.0.0.1")
    if quiet:
        kwargs["logging_level"] = logging.WARNING
    return ray.init(**kwargs)


def cpus_per_actor(num_actors: int, use_gpu: bool, reserve: float = 0.0) -> float:
    """CPUs for each of ``num_actors`` long-lived actors (training workers, model actors).

    Leaves one whole CPU (plus ``reserve``) free for the Ray Data tasks that feed them: if actors held
    every CPU, the decode tasks would never be scheduled and the job would hang forever. On GPU
    nodes each actor takes one CPU beside its GPU.
    """
    import ray

    if use_gpu:
        return 1.0
    total = ray.cluster_resources().get("CPU", 1.0)
    return max(0.25, min(1.0, (total - 1.0 - reserve) / max(num_actors, 1)))


def frame_dataset(frame, rows_per_block: int, min_blocks: int = 1):
    """A Ray Dataset of a pandas frame split into even blocks of at most ``rows_per_block`` rows.

    Every job here hands Ray Data a small table (file names, sequence ids) whose rows are expensive
    (an image each): the block, not the row, is the unit of a task, so its size is chosen here.
    ``min_blocks`` keeps small jobs from leaving CPUs idle (never more blocks than rows).
    """
    import math

    import numpy as np
    import ray

    frame = frame.reset_index(drop=True)
    n_blocks = max(math.ceil(len(frame) / rows_per_block), min(len(frame), min_blocks), 1)
    bounds = np.linspace(0, len(frame), n_blocks + 1).astype(int)
    return ray.data.from_pandas([frame.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a])


def state_api_available() -> bool:
    """Whether the connected Ray serves its state API (it comes with the dashboard)."""
    from ray.util.state import list_actors
    from ray.util.state.exception import RayStateApiException

    try:
        list_actors(limit=1, raise_on_missing_output=False)
    except (RayStateApiException, ConnectionError):
        return False
    return True
