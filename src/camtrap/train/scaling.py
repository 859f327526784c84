"""How many workers a run gets, on what, with how many CPUs each, at which LR: resolved from the recipe's
``scaling`` block, the job's flags and what the cluster has or can get.

The recipe says what the seed ran (8 GPU workers); the cluster decides whether that means GPUs
(``use_gpu: auto``: GPUs now, or an autoscaler node type that has them) and how many CPUs one worker
may reserve (from one node's CPUs, never from a head node that advertises none). A plan the cluster
cannot satisfy now and cannot scale to is refused before any worker is asked for: Ray would otherwise
wait for the resources forever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from camtrap.config.recipe import Recipe, StageConfig
from camtrap.errors import InputError
from camtrap.runtime import ClusterView

#: CPU a training worker reserves on a GPU node: it feeds its GPU; the node's other CPUs decode. A node
#: with fewer than ``GPU_WORKER_CPUS + DECODE_CPUS`` CPUs per GPU gets workers that reserve less (down to
#: none: a GPU worker's thread mostly waits for its GPU), so decode tasks always find a whole CPU.
GPU_WORKER_CPUS = 1.0
#: Bounds of a CPU worker's reservation: at least a quarter core (so many workers fit a laptop), at
#: most one core (torch threads follow it; more threads per worker fight the decode tasks).
MIN_WORKER_CPUS, MAX_WORKER_CPUS = 0.25, 1.0
#: CPUs of a node left to the Ray Data tasks that decode and augment for the workers.
DECODE_CPUS = 1.0


class ScalingError(InputError):
    """A worker plan the cluster cannot satisfy now and cannot scale to."""


@dataclass(frozen=True)
class WorkerPlan:
    """The resolved workers of a run."""

    num_workers: int
    use_gpu: bool
    cpus_per_worker: float
    torch_threads: int
    lr_scale: float
    gpu_reason: str
    availability: str
    must_autoscale: bool
    #: Whole CPUs the nodes keep for the Ray Data decode tasks beside these workers (up now, or on the
    #: node types the autoscaler adds); at least one, else the plan is refused.
    decode_cpus: float = 1.0

    @property
    def resources_per_worker(self) -> dict[str, float]:
        return {"CPU": self.cpus_per_worker, **({"GPU": 1.0} if self.use_gpu else {})}


def resolve_use_gpu(setting: str | bool, view: ClusterView) -> tuple[bool, str]:
    """(use GPUs, why) for ``use_gpu`` of ``auto`` / True / False on this cluster."""
    if setting is True:
        return True, "use_gpu: true"
    if setting is False:
        return False, "use_gpu: false"
    if view.gpus_now > 0:
        return True, f"auto: the cluster has {view.gpus_now:g} GPUs"
    if view.can_autoscale(gpu=True):
        return True, f"auto: the {view.source} can add GPU nodes (up to {view.max_gpus:g} GPUs)"
    return False, "auto: no GPUs in the cluster and no autoscaler node type with GPUs"


def worker_cpus(num_workers: int, use_gpu: bool, view: ClusterView) -> float:
    """CPUs one worker reserves, sized from the node that will host it.

    On a GPU node a worker takes one CPU when the node has at least ``1 + DECODE_CPUS`` per GPU, else
    what is left after :data:`DECODE_CPUS` per GPU (none on a node of 1 CPU per GPU: decode tasks need
    whole CPUs, and a worker holding the node's only CPU would leave them none); on CPU nodes the
    workers that share the largest node leave it :data:`DECODE_CPUS` for the Ray Data tasks.
    """
    node = view.largest_node(gpu=use_gpu)
    if use_gpu:
        per_gpu = node.cpus / node.gpus if node is not None and node.gpus > 0 else GPU_WORKER_CPUS + DECODE_CPUS
        return max(0.0, min(GPU_WORKER_CPUS, per_gpu - DECODE_CPUS))
    cpus = node.cpus if node is not None else 1.0
    return max(MIN_WORKER_CPUS, min(MAX_WORKER_CPUS, (cpus - DECODE_CPUS) / max(num_workers, 1)))


def _free_whole_cpus(nodes, n: int, use_gpu: bool, cpus: float) -> float:
    """Whole CPUs left on ``nodes`` once ``n`` workers of ``cpus`` each are placed (GPU workers one per GPU,
    CPU workers packed on the largest nodes first): the CPUs a 1-CPU decode task can still get."""
    free, left = 0.0, n
    for node in sorted(nodes, key=lambda s: (s.gpus, s.cpus), reverse=True):
        fits = node.gpus if use_gpu else (node.cpus // cpus if cpus > 0 else left)
        k = int(min(left, fits))
        left -= k
        free += math.floor(max(0.0, node.cpus - k * cpus) + 1e-9)
    return free


def decode_cpus(n: int, use_gpu: bool, cpus: float, view: ClusterView) -> float:
    """Whole CPUs the decode tasks get beside ``n`` workers: on the nodes up now, else (when the cluster
    must scale) on the node types the autoscaler adds, CPU-only types included. Never a hang: a plan
    that leaves none is refused (:class:`ScalingError`) before any worker is asked for."""
    now = _free_whole_cpus(view.nodes, n, use_gpu, cpus)
    if now >= 1:
        return now
    scalable = [t for t in view.node_types if t.max_count > 0]
    later = max((_free_whole_cpus([t], min(n, int(t.gpus)) if use_gpu else n, use_gpu, cpus) for t in scalable),
                default=0.0)
    cpu_only = max((math.floor(t.cpus) for t in scalable if t.gpus == 0), default=0)
    if max(later, cpu_only) >= 1:
        return float(max(later, cpu_only))
    raise ScalingError(
        f"{n} workers x {cpus:g} CPU would leave the Ray Data tasks that decode the images no whole CPU (the cluster "
        f"has {view.cpus_now:g} CPUs and no autoscaler node type that adds one); the job would wait forever. Use "
        f"--cpus-per-worker 0, fewer --num-workers, or add a node with CPUs (cluster.yaml's `cpu` type)"
    )


def _availability(n: int, use_gpu: bool, cpus: float, view: ClusterView) -> tuple[str, bool]:
    """(what the cluster can do for this plan, whether it must scale up first); ScalingError if nothing can."""
    need_gpus, need_cpus = (n if use_gpu else 0), n * cpus
    if view.gpus_now >= need_gpus and view.cpus_now >= need_cpus:
        return f"the cluster has it now ({view.cpus_now:g} CPUs, {view.gpus_now:g} GPUs)", False
    if view.can_autoscale(gpu=use_gpu) and (not use_gpu or view.max_gpus >= need_gpus):
        return (f"the cluster has {view.cpus_now:g} CPUs and {view.gpus_now:g} GPUs now: the {view.source} must add "
                f"nodes first (the job waits for them)"), True
    what = f"{need_gpus} GPUs" if use_gpu else f"{need_cpus:g} CPUs"
    raise ScalingError(
        f"{n} workers need {what}; the cluster has {view.cpus_now:g} CPUs and {view.gpus_now:g} GPUs and no "
        f"autoscaler node type that adds them (use --num-workers, --cpus-per-worker or --no-use-gpu)"
    )


def plan_workers(
    recipe: Recipe,
    view: ClusterView,
    num_workers: int | None = None,
    use_gpu: bool | None = None,
    cpus_per_worker: float | None = None,
) -> WorkerPlan:
    """The recipe's ``scaling`` with the job's overrides (``None`` = the recipe's), resolved on ``view``."""
    scaling = recipe.scaling
    n = num_workers if num_workers is not None else scaling.num_workers
    if n < 1:
        raise ScalingError(f"num_workers must be at least 1, got {n}")
    gpu, reason = resolve_use_gpu(scaling.use_gpu if use_gpu is None else use_gpu, view)
    cpus = next(c for c in (cpus_per_worker, scaling.cpus_per_worker, worker_cpus(n, gpu, view)) if c is not None)
    threads = max(1, math.floor(cpus)) if gpu else max(1, round(cpus))
    availability, must_autoscale = _availability(n, gpu, cpus, view)
    decode = decode_cpus(n, gpu, cpus, view)
    lr_scale = n / scaling.num_workers if scaling.scale_lr else 1.0
    return WorkerPlan(n, gpu, cpus, threads, lr_scale, reason, availability, must_autoscale, decode)


def scaled_stage(stage: StageConfig, lr_scale: float) -> StageConfig:
    """The stage with ``lr`` and ``min_lr`` scaled linearly (the global batch changed by ``lr_scale``)."""
    if lr_scale == 1.0:
        return stage
    return stage.model_copy(update={"lr": stage.lr * lr_scale, "min_lr": stage.min_lr * lr_scale})
