"""The memory bench: peak RSS of the whole prepare and predict jobs on N and 10N images.

Streaming means memory set by the blocks in flight, not by the number of images; the sampler here
counts the job's own processes (the driver and the Ray workers doing its work) and leaves out what
Ray runs anyway, so the ratio speaks of the job.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil

from camtrap.bench.common import TARGETS, ratio, replicated_inputs, untrained_model_file
from camtrap.data.contract import read_metadata
from camtrap.data.prepare import prepare_images
from camtrap.errors import InputError
from camtrap.run_layout import MODEL_FILE

#: Ray's own processes that take the ``ray::`` process title: agents and the system actors Ray Data
#: starts once and keeps (they serve every dataset of the session, not one job).
RAY_SYSTEM_PROCESSES = frozenset({"DashboardAgent", "RuntimeEnvAgent", "_StatsActor", "_AutoscalingCoordinatorActor"})


def _ray_title(cmdline: list[str]) -> str | None:
    """``MapBatches`` for ``ray::MapBatches(decode_batch)``, ``_StatsActor`` for ``ray::_StatsActor.method``."""
    if not cmdline or not cmdline[0].startswith("ray::"):
        return None
    return re.split(r"[.(\s]", cmdline[0][len("ray::"):], maxsplit=1)[0]


class JobMemorySampler:
    """Peak resident memory of a job: the driver plus every Ray worker process that runs its work.

    What is counted, and why it is fair:

    * the driver (this process): it plans the job, collects results and writes the outputs;
    * every Ray worker *started by this driver's Ray* (a descendant of this process: the Ray must be
      the one started in-process, as the bench script does) that works for the job: a worker started
      while the job runs (Ray starts workers on demand for the job's tasks and actors), or an idle
      worker that existed before and is seen running the job's work (its process title,
      ``ray::<task or actor>``, changed from ``ray::IDLE``). Once counted, a worker stays counted
      until the end of the job, also while idle between tasks, since it keeps its memory. A reused
      worker whose task starts and ends between two samples is missed; its memory was resident
      before the job anyway, and the tasks of a real job (a block of full-size images) last seconds.

    Not counted: Ray's own processes (GCS, raylet, dashboard, agents, the system actors Ray Data keeps
    for the whole session, pre-started idle workers) and what earlier jobs left behind (their idle
    workers, actors not yet reaped: a ``TrainController`` lingers after ``fit()``, for one). They
    exist whether or not the job runs and do not grow with it; their total is measured before and
    after the job and reported separately (``ray_own_mb_before``/``after``). Nor are other Rays on
    the machine (not descendants).

    RSS counts shared pages (libraries, the object store's shared memory) in every process that
    touches them, so the sum overstates the memory in use; ``private`` (RSS minus shared pages) is
    reported beside it. Sampled every ``interval`` seconds in a background thread between
    :meth:`start` and :meth:`stop`.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self._me = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camtrap-memory-sampler", daemon=True)
        self.job_processes: dict[int, str] = {}
        self.peak_mb = self.peak_private_mb = self.peak_driver_mb = self.peak_workers_mb = 0.0
        self.samples = 0
        self._before = {p.pid: t for p, t in self._ray_processes()}
        self.driver_baseline_mb = self._me.memory_info().rss / 2**20
        self.ray_own_mb_before = self.ray_own_mb()
        self.ray_own_mb_after = float("nan")

    def _ray_processes(self) -> Iterator[tuple[psutil.Process, str]]:
        """(process, title) of every ``ray::`` process under this driver."""
        for p in self._me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                title = _ray_title(p.cmdline())
                if title is not None:
                    yield p, title

    def ray_own_mb(self) -> float:
        """RSS of every process this driver's Ray runs (raylet, GCS, dashboard, agents, system actors,
        idle workers, leftovers of earlier jobs), less the job's workers."""
        total = 0
        for p in self._me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if p.pid not in self.job_processes:
                    total += p.memory_info().rss
        return total / 2**20

    def sample(self) -> None:
        mine = self._me.memory_info()
        rss, private, workers = mine.rss, mine.rss - mine.shared, 0
        for p, title in self._ray_processes():
            if title in RAY_SYSTEM_PROCESSES:
                self.job_processes.pop(p.pid, None)  # a new worker that became one of Ray's system actors
                continue
            if p.pid not in self._before or (title != "IDLE" and title != self._before[p.pid]):
                self.job_processes[p.pid] = title
            if p.pid in self.job_processes:
                with contextlib.suppress(psutil.Error):
                    m = p.memory_info()
                    rss, private, workers = rss + m.rss, private + m.rss - m.shared, workers + m.rss
        self.samples += 1
        if rss / 2**20 > self.peak_mb:
            self.peak_mb, self.peak_driver_mb, self.peak_workers_mb = rss / 2**20, mine.rss / 2**20, workers / 2**20
        self.peak_private_mb = max(self.peak_private_mb, private / 2**20)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
        self.ray_own_mb_after = self.ray_own_mb()

    def as_dict(self) -> dict[str, Any]:
        return {
            "driver_baseline_mb": self.driver_baseline_mb,
            "peak_rss_mb": self.peak_mb,
            "peak_driver_mb": self.peak_driver_mb,
            "peak_workers_mb": self.peak_workers_mb,
            "peak_private_mb": self.peak_private_mb,
            "job_processes": len(self.job_processes),
            "job_process_titles": sorted(set(self.job_processes.values())),
            "ray_processes_before": len(self._before),
            "ray_own_mb_before": self.ray_own_mb_before,
            "ray_own_mb_after": self.ray_own_mb_after,
            "samples": self.samples,
        }


def _require_local_ray() -> None:
    """The sampler finds the job's workers among this process's descendants: Ray must be started here."""
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if any("raylet" in part for part in p.cmdline()[:1]):
                return
    raise InputError("memory bench: needs a Ray started by this process (unset RAY_ADDRESS / --address): "
                     "it measures that Ray's worker processes, which a joined cluster's are not")


def bench_memory(
    metadata: str, images_dir: str, images: int = 64, factor: int = 10, long_side: int = 128,
    batch_size: int = 16, rows_per_task: int | None = None, interval: float = 0.1, warmup: bool = True,
) -> dict[str, Any]:
    """Peak RSS of the whole job (:class:`JobMemorySampler`) for prepare and predict on N and 10N images.

    Streaming means memory set by the blocks in flight, not by the number of images: the target is
    10N within 1.2x of N. The N images are the first ``images`` rows of ``metadata``, 10N is ten
    hard-linked copies of them (:func:`replicated_inputs`). With ``warmup``, one unrecorded run on N
    images first imports the libraries in the driver and the reused Ray workers, so both recorded runs
    start from the same state (else the N run alone would pay for first imports). ``rows_per_task``
    (images per Ray Data task) is each job's own default unless given. Ray must have been started by
    this process.
    """
    from camtrap.infer.predict import predict

    _require_local_ray()
    root = tempfile.mkdtemp(prefix="camtrap-bench-memory-")
    try:
        small, large = replicated_inputs(metadata, images_dir, root, images, factor)
        copies_dir = os.path.join(root, "images")
        model_path = untrained_model_file(os.path.join(root, "model", MODEL_FILE), long_side)
        n_images = len(read_metadata(small).frame)
        per_task = {} if rows_per_task is None else {"rows_per_task": rows_per_task}
        jobs: dict[str, Callable[[str, str], None]] = {
            "prepare": lambda md, out: prepare_images(md, copies_dir, out, overwrite=True, **per_task),
            "predict": lambda md, out: predict([model_path], md, copies_dir, os.path.join(out, "submission.csv"),
                                               work_dir=os.path.join(out, "work"), batch_size=batch_size, **per_task),
        }
        results = {}
        for stage, job in jobs.items():
            if warmup:
                job(small, os.path.join(root, f"{stage}-warmup"))
            runs = {}
            for label, md in (("n", small), ("many", large)):
                start = time.perf_counter()
                sampler = JobMemorySampler(interval)
                sampler.start()
                try:
                    job(md, os.path.join(root, f"{stage}-{label}"))
                finally:
                    sampler.stop()
                runs[label] = sampler.as_dict() | {"images": len(read_metadata(md).frame),
                                                   "seconds": time.perf_counter() - start}
                shutil.rmtree(os.path.join(root, f"{stage}-{label}"), ignore_errors=True)
            n, many = runs["n"], runs["many"]
            results[stage] = {
                "n": n,
                "many": many,
                "ratio": ratio(many["peak_rss_mb"], n["peak_rss_mb"]),
                "growth_ratio": ratio(many["peak_rss_mb"] - many["driver_baseline_mb"],
                                       n["peak_rss_mb"] - n["driver_baseline_mb"]),
            }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "stage": "memory",
        "images": n_images,
        "factor": factor,
        "rows_per_task": rows_per_task,
        "interval_s": interval,
        "warmup": warmup,
        **results,
        "targets": {"ratio": TARGETS["memory"]},
    }


def format_memory(result: dict[str, Any]) -> str:
    """The console summary of :func:`bench_memory`."""
    n, many = result["images"], result["images"] * result["factor"]
    lines = [f"memory: peak RSS of the job (driver + the Ray workers running it), {n} vs {many} images"]
    for stage in ("prepare", "predict"):
        r = result[stage]
        lines.append(
            f"  {stage:<8} {r['n']['peak_rss_mb']:7.0f} MB on {n}, {r['many']['peak_rss_mb']:7.0f} MB on {many} "
            f"-> {r['ratio']:.2f}x (target <= {result['targets']['ratio']})   above the driver's start: "
            f"{r['n']['peak_rss_mb'] - r['n']['driver_baseline_mb']:.0f} -> "
            f"{r['many']['peak_rss_mb'] - r['many']['driver_baseline_mb']:.0f} MB ({r['growth_ratio']:.2f}x)"
        )
    first = result["prepare"]["n"]
    lines.append(f"  not counted: Ray's own processes and earlier jobs' leftovers, {first['ray_own_mb_before']:.0f} MB "
                 f"before the first run (raylet, GCS, dashboard, agents, system actors, idle workers)")
    return "\n".join(lines)
