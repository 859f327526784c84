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
* **Batch**: images per actor call, :func:`scoring_batch_size` of the actors' device (hundreds on a GPU,
  whose kernels a batch of 16 leaves mostly idle; 16 on a CPU) unless ``--batch-size`` says otherwise.
* **Autocast** (``--amp``): as training's ``amp`` (:func:`camtrap.train.loop.resolve_amp`), resolved in
  each actor for its own device: ``auto`` is bf16 from compute capability 8.0, fp16 below, off on CPU.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from camtrap.errors import InputError
from camtrap.runtime import ClusterView
from camtrap.train.scaling import DECODE_CPUS, resolve_use_gpu, worker_cpus

#: The custom resource a node type advertises to host scoring's model actors (one per GPU).
SCORING_RESOURCE = "scoring_gpu"
#: Images per model-actor call by device (:func:`scoring_batch_size`). A CPU actor's rate hardly depends on
#: its batch; a GPU's grows with it into the hundreds (the plain bf16 loop that scored 442.6 img/s on an
#: H200 ran batches of 256 images, 512 with their flips).
CPU_SCORING_BATCH = 16
GPU_SCORING_BATCH = 256
#: ``--amp`` of scoring: training's ``amp`` values (:func:`camtrap.train.loop.resolve_amp`).
AMP_MODES: tuple[str, ...] = ("auto", "off", "bf16", "fp16")

Device = Literal["cpu", "cuda"]


def scoring_batch_size(device: Device, requested: int | None = None) -> int:
    """Images per model-actor call on ``device``: ``requested`` (``--batch-size``) when given, else
    :data:`GPU_SCORING_BATCH` on ``cuda`` and :data:`CPU_SCORING_BATCH` on ``cpu``."""
    if requested is not None:
        if int(requested) < 1:
            raise InputError(f"--batch-size: must be at least 1, got {requested}")
        return int(requested)
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return GPU_SCORING_BATCH if device == "cuda" else CPU_SCORING_BATCH


def check_amp(amp: str, cuda: bool) -> str:
    """``amp`` if it is one of :data:`AMP_MODES` and the actors' device can run it (fp16 needs CUDA)."""
    if amp not in AMP_MODES:
        raise InputError(f"--amp {amp!r}: expected one of {list(AMP_MODES)}")
    if amp == "fp16" and not cuda:
        raise InputError("--amp fp16 needs CUDA model actors; these compute on CPU (use auto, off or bf16)")
    return amp


def describe_amp(amp: str, cuda: bool) -> str:
    """What ``amp`` does on the actors' device, for the plan line."""
    if amp == "off" or (amp == "auto" and not cuda):
        return "float32 (no autocast)" if amp == "off" else "float32 (autocast auto is off on CPU)"
    if amp == "auto":
        return "autocast auto (bf16 from compute capability 8.0, fp16 below)"
    return f"autocast {amp}"


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
    batch_size: int = CPU_SCORING_BATCH
    amp: str = "auto"
    #: Whether the actors compute on CUDA: ``use_gpu`` unless the GPU nodes turn out to have no CUDA device
    #: (a simulated cluster; :meth:`on_cpu_after_all`).
    cuda: bool = False

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
                f"{each} each{extra}; batch {self.batch_size} images, {describe_amp(self.amp, self.cuda)}; "
                f"decode and resize tasks run on CPUs")

    def on_cpu_after_all(self, requested_batch: int | None) -> ActorPlan:
        """The plan once its GPU nodes proved to have no CUDA device: the actors hold their GPUs but compute on
        CPU, so a CPU's batch (unless ``--batch-size`` set one) and autocast as on CPU."""
        return dataclasses.replace(self, cuda=False, batch_size=scoring_batch_size("cpu", requested_batch),
                                   amp=check_amp(self.amp, cuda=False))


def _reachable_gpus(view: ClusterView, pinned: bool) -> float:
    return view.gpus_with(SCORING_RESOURCE) if pinned else view.max_gpus


def _reachable_actor_cpus(view: ClusterView) -> float:
    """CPUs CPU actors may take: every node's (now and addable) less what its decode tasks keep."""
    now = sum(max(0.0, n.cpus - DECODE_CPUS) for n in view.nodes)
    return now + sum(max(0.0, t.cpus - DECODE_CPUS) * t.max_count for t in view.node_types if t.gpus == 0)


def plan_actors(view: ClusterView, num_models: int, use_gpu: bool | None = None,
                pool: tuple[int, int] | None = None, batch_size: int | None = None,
                amp: str = "auto") -> ActorPlan:
    """Device, pool bounds, per-actor resources, batch and autocast of ``num_models`` model pools on ``view``.

    ``use_gpu`` None is ``auto``; ``pool`` None sizes the pool from the cluster: on GPUs, 1 up to
    every reachable GPU shared among the models; on CPUs, 1 up to the CPUs the nodes leave after
    decoding. ``batch_size`` None: :func:`scoring_batch_size` of the device. Raises :class:`InputError`
    for GPUs the cluster has not and cannot get (Ray would wait for them forever), and for an ``amp``
    the device cannot run.
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
                     resources={SCORING_RESOURCE: 1.0} if pinned else {},
                     batch_size=scoring_batch_size("cuda" if gpu else "cpu", batch_size),
                     amp=check_amp(amp, cuda=gpu), cuda=gpu)
