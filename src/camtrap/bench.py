"""Benchmarks of the platform's jobs against the plain baseline a user would otherwise write.

Machines here are shared and noisy, so every figure is the median of several repetitions, and every
target is a ratio between the platform and its baseline measured in the same run on the same inputs.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from camtrap.contract import read_metadata
from camtrap.prepare import PrepareSettings, prepare_images, prepare_one


@dataclass
class Timing:
    name: str
    seconds: list[float] = field(default_factory=list)
    items: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        return self.items / self.median

    def as_dict(self) -> dict:
        return {"name": self.name, "items": self.items, "seconds": self.seconds, "median_s": self.median,
                "items_per_s": self.rate}


def _time(name: str, items: int, repeats: int, fn: Callable[[int], None]) -> Timing:
    t = Timing(name, items=items)
    for r in range(repeats):
        start = time.perf_counter()
        fn(r)
        t.seconds.append(time.perf_counter() - start)
    return t


def _same_tree(a: str, b: str, files: list[str]) -> list[str]:
    """Relative paths whose bytes differ between two output folders."""
    diff = []
    for rel in files:
        pa, pb = os.path.join(a, rel), os.path.join(b, rel)
        if not (os.path.exists(pa) and os.path.exists(pb)):
            diff.append(rel)
            continue
        with open(pa, "rb") as fa, open(pb, "rb") as fb:
            if fa.read() != fb.read():
                diff.append(rel)
    return diff


def bench_prepare(
    metadata: str, images_dir: str, repeats: int = 3, settings: PrepareSettings | None = None,
    workers: int | None = None, rows_per_task: int = 32,
) -> dict:
    """Ray Data preparation vs a single-process PIL loop vs ``multiprocessing.Pool(cpu_count)``.

    Every variant runs :func:`camtrap.prepare.prepare_one` on the same files, into its own folder,
    ``repeats`` times from scratch; the outputs must be byte-identical. Ray is started before timing
    (a cluster is long-lived; its start-up is reported separately by the caller).
    """
    settings = settings or PrepareSettings()
    files = list(read_metadata(metadata).frame["file_name"])
    workers = workers or os.cpu_count() or 1
    root = tempfile.mkdtemp(prefix="camtrap-bench-prepare-")
    outs = {k: os.path.join(root, k) for k in ("single", "pool", "ray")}

    def fresh(key: str) -> str:
        shutil.rmtree(outs[key], ignore_errors=True)
        return outs[key]

    def single(_: int) -> None:
        out = fresh("single")
        for f in files:
            prepare_one(f, images_dir, out, settings)

    def pool(_: int) -> None:
        out = fresh("pool")
        fn = partial(prepare_one, images_dir=images_dir, out_dir=out, settings=settings)
        p = mp.get_context("fork").Pool(workers)
        try:
            list(p.imap_unordered(fn, files, chunksize=8))
        finally:
            p.close()  # not terminate(): SIGTERM would trip the signal handlers forked from Ray
            p.join()

    def ray_job(_: int) -> None:
        prepare_images(metadata, images_dir, fresh("ray"), settings, overwrite=True, rows_per_task=rows_per_task)

    timings = [
        _time("single-process PIL loop", len(files), repeats, single),
        _time(f"multiprocessing.Pool({workers})", len(files), repeats, pool),
        _time("Ray Data prepare job", len(files), repeats, ray_job),
    ]
    mismatched = _same_tree(outs["single"], outs["ray"], files) + _same_tree(outs["single"], outs["pool"], files)
    shutil.rmtree(root, ignore_errors=True)
    single_t, pool_t, ray_t = timings
    return {
        "stage": "prepare",
        "images": len(files),
        "repeats": repeats,
        "timings": [t.as_dict() for t in timings],
        "ratio_vs_single": ray_t.rate / single_t.rate,
        "ratio_vs_pool": ray_t.rate / pool_t.rate,
        "pool_vs_single": pool_t.rate / single_t.rate,
        "targets": {"ratio_vs_single": 1.8, "ratio_vs_pool": 0.95},
        "outputs_identical": not mismatched,
        "mismatched_files": mismatched[:10],
    }


def format_prepare(result: dict) -> str:
    lines = [f"prepare: {result['images']} images, median of {result['repeats']} runs"]
    for t in result["timings"]:
        lines.append(f"  {t['name']:<28} {t['items_per_s']:7.1f} img/s  ({t['median_s']:.2f} s)")
    lines.append(
        f"  Ray / single = {result['ratio_vs_single']:.2f}x (target >= 1.8)   "
        f"Ray / Pool = {result['ratio_vs_pool']:.2f}x (target >= 0.95)   "
        f"Pool / single = {result['pool_vs_single']:.2f}x"
    )
    lines.append(f"  outputs identical: {result['outputs_identical']}")
    return "\n".join(lines)
