"""Where a scoring job's model actors run and how many there are, resolved from what the cluster has or
can get.

* **Device**: GPUs when the cluster has them or its autoscaler can add them (``auto``, the default, as
  training's ``use_gpu: auto``); CPU otherwise. ``--use-gpu`` / ``--no-use-gpu`` override.
* **Pool**: per model, an autoscaling actor pool ``MIN..MAX``. Ray Data grows a pool while decoded
  blocks queue for it; a growing GPU pool asks for GPUs the cluster lacks, and the autoscaler adds GPU
  nodes for them, then removes them when the job ends and they sit idle. The default maximum is every
  GPU the cluster can reach, shared among the models.
* **Node type**: a cluster that advertises :data:`SCORING_RESOURCE` on some node type (``cluster.yaml``'s
  single-GPU spot scoring nodes) gets its model actors there: each asks for one unit besides its GPU.
  Without it the autoscaler picks the type that packs the queued work best, which for one-GPU actors
  is the multi-GPU training type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from camtrap.errors import InputError
from camtrap.runtime import ClusterView
from camtrap.train.scaling import DECODE_CPUS, resolve_use_gpu, worker_cpus

#: The custom resource a node type advertises to host scoring's model actors (one per GPU).
SCORING_RESOURCE = "scoring_gpu"


@dataclass(frozen=True)
class ActorPlan:
    """The resolved model actors of a scoring job: per model, a pool of ``min_actors..max_actors``."""

    num_models: int
    use_gpu: bool
    gpu_reason: str
    min_actors: int
    max_actors: int
    cpus: float
    threads: int
    resources: dict[str, float]

    def remote_args(self) -> dict:
        """``map_batches`` resource arguments of one model actor."""
        return {"num_cpus": self.cpus, "num_gpus": 1 if self.use_gpu else 0,
                **({"resources": dict(self.resources)} if self.resources else {})}

    def compute(self):
        """The Ray Data actor pool of one model."""
        import ray

        if self.min_actors == self.max_actors:
            return ray.data.ActorPoolStrategy(size=self.min_actors)
        return ray.data.ActorPoolStrategy(min_size=self.min_actors, max_size=self.max_actors)

    def hosts_up(self, view: ClusterView) -> bool:
        """Whether a node up now can host one of these actors (else the autoscaler must add one first)."""
        return any((n.gpus >= 1 if self.use_gpu else n.cpus >= self.cpus)
                   and all(n.custom.get(k, 0) >= v for k, v in self.resources.items()) for n in view.nodes)

    def describe(self) -> str:
        pool = (f"{self.min_actors} actors" if self.min_actors == self.max_actors
                else f"{self.min_actors}..{self.max_actors} actors (a pool that grows while images queue)")
        where = "GPU" if self.use_gpu else "CPU"
        each = f"1 GPU + {self.cpus:g} CPU" if self.use_gpu else f"{self.cpus:g} CPU, {self.threads} torch threads"
        extra = (f"; they ask for {SCORING_RESOURCE} too, so they run on the scoring node type"
                 if self.resources else "")
        return (f"predict: model actors on {where} ({self.gpu_reason}): {self.num_models} model(s) x {pool}, "
                f"{each} each{extra}; decode tasks run on CPUs")


def _reachable_gpus(view: ClusterView, pinned: bool) -> float:
    return view.gpus_with(SCORING_RESOURCE) if pinned else view.max_gpus


def _reachable_actor_cpus(view: ClusterView) -> float:
    """CPUs CPU actors may take: every node's (now and addable) less what its decode tasks keep."""
    now = sum(max(0.0, n.cpus - DECODE_CPUS) for n in view.nodes)
    return now + sum(max(0.0, t.cpus - DECODE_CPUS) * t.max_count for t in view.node_types if t.gpus == 0)


def plan_actors(view: ClusterView, num_models: int, use_gpu: bool | None = None,
                pool: tuple[int, int] | None = None) -> ActorPlan:
    """Device, pool bounds and per-actor resources of ``num_models`` model pools on ``view``.

    ``use_gpu`` None is ``auto``; ``pool`` None sizes the pool from the cluster: on GPUs, 1 up to
    every reachable GPU shared among the models; on CPUs, 1 up to the CPUs the nodes leave after
    decoding. Raises :class:`InputError` for GPUs the cluster has not and cannot get (Ray would wait
    for them forever).
    """
    gpu, reason = resolve_use_gpu("auto" if use_gpu is None else use_gpu, view)
    pinned = gpu and view.offers(SCORING_RESOURCE)
    cpus = worker_cpus(num_models, gpu, view)
    if gpu:
        reachable = _reachable_gpus(view, pinned)
        if reachable < num_models:
            raise InputError(
                f"--use-gpu: {num_models} model(s) need at least {num_models} GPU(s); the cluster has "
                f"{view.gpus_now:g} and no autoscaler node type that adds enough (use --no-use-gpu)")
        most = max(1, math.floor(reachable / num_models))
    else:
        most = max(1, math.floor(_reachable_actor_cpus(view) / (cpus * num_models)))
    lo, hi = pool if pool is not None else (1, most)
    return ActorPlan(num_models=num_models, use_gpu=gpu, gpu_reason=reason, min_actors=lo, max_actors=hi,
                     cpus=cpus, threads=max(1, math.floor(cpus)),
                     resources={SCORING_RESOURCE: 1.0} if pinned else {})
