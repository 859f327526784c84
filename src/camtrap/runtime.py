"""Starting or joining Ray, in one place, for every job script and test.

* With no address (and no ``RAY_ADDRESS``), Ray starts in-process: the laptop and CI case. That Ray is
  pinned as this job's (``RAY_ADDRESS``) for every process it starts, see :func:`start_own_ray`.
* With ``--address auto`` or a ``ray job submit`` driver, it joins the running cluster.

In both cases the ``camtrap`` package is shipped to the workers through the runtime environment
(``py_modules``), so cluster nodes need only the third-party dependencies, not this project installed.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import camtrap
from camtrap.console import quiet_ray_console

#: Environment every Ray worker of ours gets: albumentations must not call PyPI at import.
WORKER_ENV = {"NO_ALBUMENTATIONS_UPDATE": "1"}
#: The job's own settings that its Ray tasks must see too (``prepare.py --follow-links``, ``--verbose``).
PASSED_ENV = ("CAMTRAP_FOLLOW_LINKS", "CAMTRAP_VERBOSE")


def package_dir() -> str:
    """Directory of the imported ``camtrap`` package (what ``py_modules`` ships)."""
    return str(Path(camtrap.__file__).resolve().parent)


def runtime_env() -> dict:
    passed = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    return {"py_modules": [package_dir()], "env_vars": {**WORKER_ENV, **passed}}


#: ``RAY_ADDRESS`` as :func:`init_ray` set it for the Ray it started; once that Ray is shut down, a
#: later ``init_ray`` in this process starts a new one instead of dialling the dead one.
_pinned_address: str | None = None


def free_port() -> int:
    """A TCP port free on every interface now (another process may still take it before we bind it)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True,
             include_dashboard: bool = True):
    """Start or join Ray once; a no-op when this process is already connected.

    ``num_cpus`` and ``include_dashboard`` only apply to a Ray started here (no address, no
    ``RAY_ADDRESS``, or ``"local"``), which :func:`start_own_ray` pins. The dashboard of a local
    Ray binds to 127.0.0.1 (never another interface) and is on by default: besides showing jobs, it
    serves the state API that Ray Train's placement-group cleaner needs. Without it, a Tune trial
    stopped early leaks its workers' placement group, and the next trial waits for CPUs forever.
    It costs about 2 s at start and no measurable CPU when idle.
    """
    import ray

    os.environ.update(WORKER_ENV)
    if ray.is_initialized():
        return ray.get_runtime_context()
    if _pinned_address and os.environ.get("RAY_ADDRESS") == _pinned_address:
        del os.environ["RAY_ADDRESS"]  # the Ray this process started and has shut down since
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict = {"runtime_env": runtime_env(), "log_to_driver": True}
    if quiet:
        kwargs["logging_level"] = logging.WARNING
    if address and address != "local":
        context = ray.init(address=address, **kwargs)
        # The state API finds "the" cluster through RAY_ADDRESS (see start_own_ray): name the one joined,
        # so a second Ray on this machine cannot make the lookup ambiguous.
        os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    else:
        context = start_own_ray(num_cpus=num_cpus, include_dashboard=include_dashboard, dashboard_host="127.0.0.1",
                                **kwargs)
    quiet_ray_console()
    return context


def start_own_ray(**init_kwargs):
    """Start a Ray for this job alone, and make it the one everything this job starts will find.

    Two jobs side by side on one machine each start a Ray, and code that looks for "the" local Ray
    without an address then cannot tell them apart. The state API (``ray.util.state.list_actors``,
    ``get_actor``) never asks the Ray its process is connected to: ``StateApiClient`` takes its server
    from ``ray.dashboard.utils.get_address_for_submission_client``: ``RAY_API_SERVER_ADDRESS``, else
    ``RAY_ADDRESS``, else ``services.canonicalize_bootstrap_address_or_die``, which reads the last
    ``ray start`` cluster from ``/tmp/ray/ray_current_cluster`` (silently another cluster, if one was
    started so) or else scans ``ps`` for raylets' ``--gcs-address`` (``find_gcs_addresses``): with two,
    "Found multiple active Ray instances". Ray Train's placement-group cleaner is a detached actor that
    calls ``get_actor`` so: with two jobs it fails (or asks the other cluster), and a trial stopped
    early leaks its placement group.

    ``RAY_ADDRESS`` set after ``ray.init`` reaches only this process (tried: a detached actor does not
    see it), because the raylet copies the environment when it starts and its workers inherit that.
    So the GCS port is chosen first (``RAY_GCS_SERVER_PORT``, which ``ray._private.node.Node`` reads
    for a head node; it stays in the environment of Ray's own processes, where only a head start reads
    it), ``RAY_ADDRESS`` is set to that address, and ``ray.init(address="local")`` (which always starts
    a new Ray and ignores ``RAY_ADDRESS``) starts this job's Ray with every process of it pinned. So,
    unlike a bare ``ray.init()``, a job never joins a ``ray start`` cluster unasked (``--address auto``
    does). Processes this job starts inherit ``RAY_ADDRESS`` too: one that must start or reach another
    Ray has to drop it from its environment, as under ``ray job submit``.
    """
    global _pinned_address
    import ray

    saved_port = os.environ.get("RAY_GCS_SERVER_PORT")
    port = int(saved_port or 0) or free_port()
    pinned = f"{ray.util.get_node_ip_address()}:{port}"
    os.environ.update(RAY_GCS_SERVER_PORT=str(port), RAY_ADDRESS=pinned)
    try:
        context = ray.init(address="local", **init_kwargs)
    except BaseException:
        os.environ.pop("RAY_ADDRESS", None)
        raise
    finally:
        if saved_port is None:
            os.environ.pop("RAY_GCS_SERVER_PORT", None)
        else:
            os.environ["RAY_GCS_SERVER_PORT"] = saved_port
    actual = ray.get_runtime_context().gcs_address
    if actual != pinned:  # the workers were told another address: only this process can be corrected
        logging.getLogger(__name__).warning("Ray's GCS is at %s, not %s as pinned", actual, pinned)
    os.environ["RAY_ADDRESS"] = _pinned_address = actual
    return context


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


def frame_dataset(frame, rows_per_block: int, min_blocks: int = 1, block_multiple: int = 1):
    """A Ray Dataset of a pandas frame split into even blocks of at most ``rows_per_block`` rows.

    Every job here hands Ray Data a small table (file names, sequence ids) whose rows are expensive
    (an image each): the block, not the row, is the unit of a task, so its size is chosen here.
    ``min_blocks`` keeps small jobs from leaving CPUs idle, and ``block_multiple`` (the CPUs the tasks
    share) rounds the count up so the last round of tasks is full: 5 blocks on 2 CPUs run in 3 rounds, the
    last with one CPU idle, a sixth of the CPU time (measured: the prepare job at 0.82x ``Pool(2)`` on 156
    images, 0.96x once rounded up to 6 blocks).
    Never more blocks than rows.
    """
    import math

    import numpy as np
    import ray

    frame = frame.reset_index(drop=True)
    n_blocks = max(math.ceil(len(frame) / rows_per_block), min_blocks, 1)
    n_blocks = min(math.ceil(n_blocks / block_multiple) * block_multiple, max(len(frame), 1))
    bounds = np.linspace(0, len(frame), n_blocks + 1).astype(int)
    return ray.data.from_pandas([frame.iloc[a:b] for a, b in itertools.pairwise(bounds) if b > a])


def state_api_available() -> bool:
    """Whether the connected Ray serves its state API (it comes with the dashboard)."""
    from ray.util.state import list_actors
    from ray.util.state.exception import RayStateApiException

    try:
        list_actors(limit=1, raise_on_missing_output=False)
    except (RayStateApiException, ConnectionError):
        return False
    return True


#: Where ``ray up`` leaves the cluster's autoscaler config on the head node (the driver of a
#: ``ray job submit`` runs there).
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"


@dataclass
class NodeShape:
    """What one node offers: its CPUs and GPUs, and (for an autoscaler node type) how many may exist."""

    cpus: float
    gpus: float
    max_count: int = 1
    name: str = ""
    #: Custom resources it advertises (e.g. ``cluster.yaml``'s ``scoring_gpu`` on its scoring node type).
    custom: dict[str, float] = field(default_factory=dict)


@dataclass
class ClusterView:
    """The nodes a cluster has now, and the node types its autoscaler may add.

    Read once before a job plans its workers: a fresh ``cluster.yaml`` cluster is a head with 0 CPUs
    and no GPUs, and only the autoscaler's node types say what the job can get.
    """

    nodes: list[NodeShape] = field(default_factory=list)
    node_types: list[NodeShape] = field(default_factory=list)
    source: str = "local machine"

    @property
    def gpus_now(self) -> float:
        return sum(n.gpus for n in self.nodes)

    @property
    def cpus_now(self) -> float:
        return sum(n.cpus for n in self.nodes)

    @property
    def max_gpus(self) -> float:
        """GPUs the cluster can reach: those it has plus what every scalable node type adds at most."""
        return self.gpus_now + sum(t.gpus * t.max_count for t in self.node_types)

    def can_autoscale(self, gpu: bool) -> bool:
        return any(t.max_count > 0 and (t.gpus > 0 if gpu else t.cpus > 0) for t in self.node_types)

    def offers(self, resource: str) -> bool:
        """Whether a node now, or a node type the autoscaler may add, advertises ``resource``."""
        return any(s.custom.get(resource, 0) > 0 and s.max_count > 0 for s in (*self.nodes, *self.node_types))

    def gpus_with(self, resource: str) -> float:
        """GPUs reachable on nodes that advertise ``resource``: those up now plus the most the autoscaler adds."""
        return (sum(n.gpus for n in self.nodes if n.custom.get(resource, 0) > 0)
                + sum(t.gpus * t.max_count for t in self.node_types if t.custom.get(resource, 0) > 0))

    def largest_node(self, gpu: bool) -> NodeShape | None:
        """The biggest node (now or addable) that can host a worker: with a GPU, or with CPUs."""
        shapes = [s for s in (*self.nodes, *self.node_types) if (s.gpus > 0 if gpu else s.cpus > 0)]
        return max(shapes, key=lambda s: (s.cpus, s.gpus), default=None)


#: Resources every Ray node has that say nothing about its hardware.
_BUILTIN = ("CPU", "GPU", "memory", "object_store_memory")


def _custom(resources: dict) -> dict[str, float]:
    """The custom resources of a node or node type (not CPU/GPU/memory, nor Ray's ``node:<ip>`` markers)."""
    return {k: float(v) for k, v in resources.items() if k not in _BUILTIN and not k.startswith("node:")
            and not k.startswith("accelerator_type:")}


def _node_types_from_gcs() -> list[NodeShape]:
    """Node types the autoscaler reported to the GCS (Ray Data reads the same record)."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - a private API: without it we fall back to the bootstrap file
        return []
    if config is None:
        return []
    return [
        NodeShape(cpus=float(g.resources.get("CPU", 0)), gpus=float(g.resources.get("GPU", 0)),
                  max_count=int(g.max_count) if g.max_count >= 0 else 10**6, name=g.name,
                  custom=_custom(dict(g.resources)))
        for g in config.node_group_configs
    ]


def _node_types_from_bootstrap(path: str = BOOTSTRAP_CONFIG) -> list[NodeShape]:
    """Node types of the autoscaler config ``ray up`` wrote on the head (``available_node_types``)."""
    import yaml

    full = Path(os.path.expanduser(path))
    if not full.is_file():
        return []
    try:
        config = yaml.safe_load(full.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    head = config.get("head_node_type")
    return [
        NodeShape(cpus=float(spec.get("resources", {}).get("CPU", 0)),
                  gpus=float(spec.get("resources", {}).get("GPU", 0)),
                  max_count=int(spec.get("max_workers", config.get("max_workers", 0)) or 0), name=name,
                  custom=_custom(spec.get("resources", {})))
        for name, spec in (config.get("available_node_types") or {}).items() if name != head
    ]


def _monitor_config_path(gcs_address: str) -> str | None:
    """The ``--autoscaling-config`` of the autoscaler (Ray's ``monitor.py``) serving ``gcs_address``, when it
    runs on this host: the driver of a ``ray job submit`` runs on the head, beside it.

    Ray's default (v1) autoscaler keeps its node types to itself: it reports none to the GCS. Its
    config file is where ``ray up`` put it (``~/ray_bootstrap_config.yaml``) or wherever ``ray start
    --head --autoscaling-config`` was told.
    """
    import psutil

    port = gcs_address.rsplit(":", 1)[-1]
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = proc.info["cmdline"] or []
        except (psutil.Error, KeyError):
            continue
        if (any(a.endswith("monitor.py") for a in cmd)
                and any(a.startswith("--gcs-address=") and a.endswith(f":{port}") for a in cmd)):
            for a in cmd:
                if a.startswith("--autoscaling-config="):
                    return a.split("=", 1)[1]
    return None


def cluster_view() -> ClusterView:
    """The connected Ray's alive nodes and autoscaler node types; the local machine when Ray is not up.

    Without a connection nothing is started: a dry run describes what a local Ray would have (this
    machine's cores and CUDA devices).
    """
    import ray

    if not ray.is_initialized():
        gpus = 0
        try:
            import torch

            gpus = torch.cuda.device_count()
        except ImportError:
            pass
        return ClusterView(nodes=[NodeShape(cpus=float(os.cpu_count() or 1), gpus=float(gpus))])
    nodes = [
        NodeShape(cpus=float(n["Resources"].get("CPU", 0)), gpus=float(n["Resources"].get("GPU", 0)),
                  name=n.get("NodeManagerAddress", ""), custom=_custom(n["Resources"]))
        for n in ray.nodes() if n.get("Alive")
    ]
    types, source = _node_types_from_gcs(), "autoscaler (GCS)"
    if not types:  # the process scan only when the GCS has no node types (Ray's default autoscaler)
        source = "autoscaler"
        for path in (_monitor_config_path(ray.get_runtime_context().gcs_address), BOOTSTRAP_CONFIG):
            if path and not types:
                types = _node_types_from_bootstrap(path)
    return ClusterView(nodes=nodes, node_types=types, source=source if types else "Ray cluster")


def gpu_nodes_have_cuda(job: str, resources: dict[str, float] | None = None) -> bool:
    """Whether a node that offers a GPU to Ray really has a CUDA device (a one-GPU probe task).

    A simulated cluster declares GPUs that are not there; the job's GPU workers and actors then
    compute on their CPUs, and ``job`` says so once. On a real cluster the probe waits, as the job's
    own GPU work would, for the autoscaler to bring up a GPU node. ``resources``: custom resources the
    job's GPU work asks for too, so the probe lands on the same node type.
    """
    import ray

    @ray.remote(num_gpus=1, num_cpus=0)
    def _probe() -> bool:
        import torch

        return torch.cuda.is_available()

    if ray.get(_probe.options(resources=resources or {}).remote()):
        return True
    print(f"{job}: the GPU nodes have no CUDA device (a simulated cluster?): the GPU work holds its GPUs but "
          "computes on CPU", flush=True)
    return False
