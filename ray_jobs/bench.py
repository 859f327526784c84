"""Benchmarks against plain baselines, as ratios measured in the same run on the same inputs.

    python ray_jobs/bench.py {prepare,ingest,train,predict,memory,scale,all} [--quick] [--out bench.json] \
        [--device cpu|cuda] [--metadata CSV --images-dir DIR [--labels CSV]]

prepare: Ray Data job vs a single PIL loop and multiprocessing.Pool; ingest: the training input pipeline
with no model (epoch datasets consumed as a training worker consumes them) vs a torch DataLoader on the
same CPUs, with Ray Data's breakdown of where the consumer waited; train: Ray Train (run_training)
vs a plain PyTorch DDP loop, images/s after the first epoch; predict: Ray Data scoring vs a plain
single-process flip-TTA loop, submissions checked equal (with --device cuda also a plain DataLoader loop in
bf16, batch 256, and the largest probability difference of autocast against float32 scoring); memory: peak RSS of the whole prepare and
predict jobs on N and 10N images; scale: an epoch's start (compact table, object store, one rank's
indices, dataset and first batch) on a synthetic 7 M-row season vs a 100k-row one and a plain pandas
loop (it makes its own season and needs no data). Without --metadata it generates camera-trap-like demo
data in a temporary folder: full-size JPEGs of --frame-sizes (default Snapshot Serengeti's 2048x1536, the
frames the decode targets are stated for).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import _bootstrap  # noqa: F401

from camtrap.bench import (
    bench_ingest,
    bench_memory,
    bench_predict,
    bench_prepare,
    bench_scale,
    bench_train,
    check_device,
    format_ingest,
    format_memory,
    format_predict,
    format_prepare,
    format_scale,
    format_train,
    machine_info,
    warm_up_ray,
)
from camtrap.data.prepare import PrepareSettings, prepare_images
from camtrap.errors import InputError, exits_on_input_error
from camtrap.runtime import init_ray

STAGES = ("prepare", "ingest", "train", "predict", "memory", "scale")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=[*STAGES, "all"])
    p.add_argument("--quick", action="store_true", help="fewer images and repetitions (all: a few minutes on 2 cores)")
    p.add_argument("--out", default=None, help="write every figure as JSON here")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="train and predict on this device")
    p.add_argument("--metadata", default=None, help="metadata CSV of the images to use (default: generated)")
    p.add_argument("--images-dir", default=None, help="raw images of --metadata")
    p.add_argument("--labels", default=None, help="labels CSV of --metadata (train)")
    p.add_argument("--prepared", default=None,
                   help="ingest, train: a folder prepare.py already made from --metadata's images (skips preparing)")
    p.add_argument("--sequences", type=int, default=None, help="generated sequences (default 150, quick 50)")
    p.add_argument("--frame-sizes", default="2048x1536",
                   help="generated frames: camera sizes WxH[,WxH...], one per camera site (default %(default)s)")
    p.add_argument("--repeats", type=int, default=None, help="repetitions per variant (default 3, quick 2)")
    p.add_argument("--rows-per-task", type=int, default=32, help="prepare: images per Ray Data task")
    p.add_argument("--train-repeats", type=int, default=None, help="runs per side of train (default: --repeats)")
    p.add_argument("--epochs", type=int, default=3, help="train, ingest: epochs per run; the first is not counted")
    p.add_argument("--ingest-copies", type=int, default=4,
                   help="ingest: the training rows repeated this many times per epoch (long enough epochs to measure)")
    p.add_argument("--ingest-cpus", type=int, default=None,
                   help="ingest: decode CPUs of each side (default: every CPU of the Ray cluster)")
    p.add_argument("--train-long-side", type=int, default=96, help="train: the stage's long side (cpu_tiny's 96)")
    p.add_argument("--batch-size", type=int, default=None, help="train: per-worker batch (default cpu_tiny's 16)")
    p.add_argument("--workers", type=int, default=None, help="train: workers (default 2; cuda: min(2, GPUs))")
    p.add_argument("--predict-long-side", type=int, default=128, help="predict: the model's inference long side")
    p.add_argument("--predict-arch", default="resnet10t",
                   help="predict: timm architecture of the (untrained) model, e.g. resnext50_32x4d for the sheet")
    p.add_argument("--predict-batch-size", type=int, default=None,
                   help="predict: images per model-actor call, for every side (default: the platform's for the "
                        "device, 256 on cuda, 16 on cpu)")
    p.add_argument("--predict-scale", type=int, default=None,
                   help="predict: also run on this many x N images to split steady rate and start-up (default 4, quick 2)")
    p.add_argument("--memory-images", type=int, default=None, help="memory: N (default 64, quick 16); 10N is run too")
    p.add_argument("--scale-rows", type=int, default=None, help="scale: rows of the season (default 7,000,000, "
                   "quick 1,000,000)")
    p.add_argument("--scale-reference-rows", type=int, default=100_000, help="scale: rows of the reference table")
    p.add_argument("--scale-world-size", type=int, default=8, help="scale: ranks the epoch is cut for")
    return p.parse_args(argv)


def _demo_inputs(root: str, sequences: int, frame_sizes: str) -> tuple[str, str, str]:
    from camtrap.demo import make_demo_dataset
    from camtrap.demo.planning import parse_sizes

    try:
        sizes = parse_sizes(frame_sizes)
    except ValueError as e:
        raise InputError(f"--frame-sizes: {e}") from None
    make_demo_dataset(root, num_sequences=sequences, seed=0, image_sizes=sizes)
    return (os.path.join(root, "train_metadata.csv"), os.path.join(root, "images"),
            os.path.join(root, "train_labels.csv"))


@exits_on_input_error
def main(argv=None) -> int:
    args = parse_args(argv)
    check_device(args.device)
    stages = STAGES if args.stage == "all" else (args.stage,)
    if args.metadata and not args.images_dir:
        raise InputError("--metadata needs --images-dir")
    if args.metadata and ("train" in stages or "ingest" in stages) and not args.labels:
        raise InputError("--metadata: the train and ingest benches need --labels too")
    scratch = tempfile.mkdtemp(prefix="camtrap-bench-")
    try:
        return run(args, stages, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(args: argparse.Namespace, stages: tuple[str, ...], scratch: str) -> int:
    repeats = args.repeats or (2 if args.quick else 3)
    if args.metadata:
        metadata, images_dir, labels = args.metadata, args.images_dir, args.labels
    elif stages == ("scale",):
        metadata = images_dir = labels = None  # the scale bench makes its own season
    else:
        metadata, images_dir, labels = _demo_inputs(os.path.join(scratch, "data"),
                                                     args.sequences or (50 if args.quick else 150), args.frame_sizes)
    start = time.perf_counter()
    init_ray()
    warm_up_ray()
    print(f"ray.init + a Ray Data warm-up: {time.perf_counter() - start:.1f}s (not counted below)")
    results = {"machine": machine_info(args.device)}
    if "prepare" in stages:
        results["prepare"] = bench_prepare(metadata, images_dir, repeats=repeats, rows_per_task=args.rows_per_task)
        print(format_prepare(results["prepare"]))
    prepared = args.prepared or os.path.join(scratch, "prepared")
    if ("train" in stages or "ingest" in stages) and not args.prepared:
        prepare_images(metadata, images_dir, prepared, PrepareSettings(), rows_per_task=args.rows_per_task)
    if "ingest" in stages:
        results["ingest"] = bench_ingest(metadata, labels, prepared, long_side=args.train_long_side,
                                         batch_size=args.batch_size or 32, epochs=args.epochs, repeats=repeats,
                                         copies=args.ingest_copies, cpus=args.ingest_cpus, device=args.device)
        print(format_ingest(results["ingest"]))
    if "train" in stages:
        results["train"] = bench_train(
            metadata, labels, prepared, repeats=args.train_repeats or repeats, long_side=args.train_long_side,
            epochs=args.epochs, batch_size=args.batch_size, num_workers=args.workers, device=args.device,
        )
        print(format_train(results["train"]))
    if "predict" in stages:
        results["predict"] = bench_predict(metadata, images_dir, long_side=args.predict_long_side, repeats=repeats,
                                           device=args.device, scale=args.predict_scale or (2 if args.quick else 4),
                                           arch=args.predict_arch, batch_size=args.predict_batch_size)
        print(format_predict(results["predict"]))
    if "memory" in stages:
        results["memory"] = bench_memory(metadata, images_dir, images=args.memory_images or (16 if args.quick else 64),
                                         long_side=args.predict_long_side)
        print(format_memory(results["memory"]))
    if "scale" in stages:
        results["scale"] = bench_scale(rows=args.scale_rows or (1_000_000 if args.quick else 7_000_000),
                                       reference_rows=args.scale_reference_rows, world_size=args.scale_world_size)
        print(format_scale(results["scale"]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
        print(f"figures written to {args.out}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
