"""Benchmarks against plain baselines, as ratios measured in the same run.

    python ray_jobs/bench.py prepare [--quick] [--out bench.json] [--metadata CSV --images-dir DIR]

Without ``--metadata`` it generates camera-trap-like demo data (full-size JPEGs) in a temporary folder.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import _bootstrap  # noqa: F401

from camtrap.bench import bench_prepare, format_prepare
from camtrap.runtime import init_ray


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["prepare", "all"])
    p.add_argument("--quick", action="store_true", help="fewer images and repetitions")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    p.add_argument("--metadata", default=None, help="metadata CSV of the images to use (default: generated)")
    p.add_argument("--images-dir", default=None)
    p.add_argument("--sequences", type=int, default=None, help="generated sequences (default 150, quick 50)")
    p.add_argument("--repeats", type=int, default=None, help="repetitions per variant (default 3, quick 2)")
    p.add_argument("--rows-per-task", type=int, default=32)
    return p.parse_args(argv)


def _demo_inputs(sequences: int) -> tuple[str, str]:
    from camtrap.demo_data import make_demo_dataset

    root = tempfile.mkdtemp(prefix="camtrap-bench-data-")
    make_demo_dataset(root, num_sequences=sequences, seed=0)
    return os.path.join(root, "train_metadata.csv"), os.path.join(root, "images")


def main(argv=None) -> int:
    args = parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 3)
    if args.metadata:
        metadata, images_dir = args.metadata, args.images_dir
    else:
        metadata, images_dir = _demo_inputs(args.sequences or (50 if args.quick else 150))
    start = time.perf_counter()
    init_ray()
    print(f"ray.init: {time.perf_counter() - start:.1f}s (not counted below)")
    results = {"machine": {"cpus": os.cpu_count()}}
    if args.stage in ("prepare", "all"):
        results["prepare"] = bench_prepare(metadata, images_dir, repeats=repeats, rows_per_task=args.rows_per_task)
        print(format_prepare(results["prepare"]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
        print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
