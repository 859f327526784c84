"""The prepare bench: the Ray Data preparation job vs a single PIL loop and ``multiprocessing.Pool``.

Every variant runs the same per-file step (:func:`camtrap.data.prepare.prepare_one`), so what is
compared is only the orchestration; the outputs must be byte-identical.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile
from functools import partial
from typing import Any

from camtrap.bench.common import time_repeats
from camtrap.data.classes import FILE_NAME
from camtrap.data.contract import read_metadata
from camtrap.data.prepare import PrepareSettings, prepare_images, prepare_one

#: Ray's rate over each baseline's that the prepare job aims for.
PREPARE_TARGETS = {"ratio_vs_single": 1.8, "ratio_vs_pool": 0.95}


def _different_files(a: str, b: str, files: list[str]) -> list[str]:
    """Relative paths whose bytes differ between two output folders (or that one of them lacks)."""
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
) -> dict[str, Any]:
    """Ray Data preparation vs a single-process PIL loop vs ``multiprocessing.Pool(cpu_count)``.

    Every variant runs :func:`camtrap.data.prepare.prepare_one` on the same files, into its own folder,
    ``repeats`` times from scratch; the outputs must be byte-identical. Ray is started before timing
    (a cluster is long-lived; its start-up is reported separately by the caller).
    """
    settings = settings or PrepareSettings()
    files = list(read_metadata(metadata).frame[FILE_NAME])
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
        time_repeats("single-process PIL loop", len(files), repeats, single),
        time_repeats(f"multiprocessing.Pool({workers})", len(files), repeats, pool),
        time_repeats("Ray Data prepare job", len(files), repeats, ray_job),
    ]
    mismatched = (_different_files(outs["single"], outs["ray"], files)
                  + _different_files(outs["single"], outs["pool"], files))
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
        "targets": dict(PREPARE_TARGETS),
        "outputs_identical": not mismatched,
        "mismatched_files": mismatched[:10],
    }


def format_prepare(result: dict[str, Any]) -> str:
    """The console summary of :func:`bench_prepare`."""
    targets = result["targets"]
    lines = [f"prepare: {result['images']} images, median of {result['repeats']} runs"]
    for t in result["timings"]:
        lines.append(f"  {t['name']:<28} {t['items_per_s']:7.1f} img/s  ({t['median_s']:.2f} s)")
    lines.append(
        f"  Ray / single = {result['ratio_vs_single']:.2f}x (target >= {targets['ratio_vs_single']})   "
        f"Ray / Pool = {result['ratio_vs_pool']:.2f}x (target >= {targets['ratio_vs_pool']})   "
        f"Pool / single = {result['pool_vs_single']:.2f}x"
    )
    lines.append(f"  outputs identical: {result['outputs_identical']}")
    return "\n".join(lines)
