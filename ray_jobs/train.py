"""Train a recipe's progressive-resolution stages with a Ray Train TorchTrainer (resumable).

    python ray_jobs/train.py --recipe cpu_tiny --metadata train_metadata.csv --labels train_labels.csv \
        --images-dir PREPARED_DIR --out RUN_DIR [--num-workers 2] [--use-gpu] [--set stages.0.lr=0.01] \
        [--decode exact|fast  (raw images only: a prepared folder brings its own)]

Rerunning the same command continues where it stopped: finished stages are skipped and the running
stage restarts from its last checkpoint. Also runs as
``ray job submit --working-dir . -- python ray_jobs/train.py ...`` on a cluster.
"""

import argparse
import os
import sys

import _bootstrap  # noqa: F401

from camtrap import cli
from camtrap.config.overrides import apply_overrides
from camtrap.config.recipe import load_recipe
from camtrap.data import storage
from camtrap.data.lock import RunLock
from camtrap.data.sequences import SEQUENCES_FILE, metadata_or_sequences
from camtrap.errors import exits_on_input_error
from camtrap.runtime import init_ray
from camtrap.train.driver import dry_run, run_training


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.job_parser(__doc__)
    cli.add_recipe(p)
    cli.add_sequences(p)
    cli.add_labels(p)
    cli.add_images_dir(p, help="prepared images (the output of prepare.py) or raw images, folder or URI")
    p.add_argument("--out", required=True, help="run directory: model.pt, stages/, metrics, TensorBoard logs")
    p.add_argument("--num-workers", type=int, default=None,
                   help="DDP workers (default: the recipe's scaling.num_workers; another count scales the LR)")
    p.add_argument("--use-gpu", action=argparse.BooleanOptionalAction, default=None,
                   help="one GPU per worker (default: the recipe's scaling.use_gpu; auto = GPUs if the cluster "
                        "has them or can add them)")
    p.add_argument("--cpus-per-worker", type=float, default=None,
                   help="CPUs reserved per worker (default: the recipe's, else sized from one node's CPUs)")
    cli.add_decode(p, None, "decode mode of raw --images-dir frames, recorded in model.pt (default exact; a "
                            "prepared folder's own mode, from its manifest, and another is refused)")
    p.add_argument("--max-failures", type=int, default=2, help="worker-group restarts from the last checkpoint")
    cli.add_overwrite(p, "clear RUN_DIR's stages, checkpoints and model and train from scratch")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (workers, device, AMP, batches, LRs, steps, storage, whether the cluster "
                        "must scale up) and start nothing")
    return p.parse_args(argv)


@exits_on_input_error
def main(argv=None) -> int:
    args = parse_args(argv)
    recipe = apply_overrides(load_recipe(args.recipe), args.set)
    args.metadata = metadata_or_sequences(args.metadata, args.images_dir, storage.join(args.out, SEQUENCES_FILE),
                                          args.sequence_gap, job="train")
    if args.dry_run:
        if args.address or os.environ.get("RAY_ADDRESS"):
            init_ray(args.address)  # only to read the cluster: no trainer, no workers
        print(dry_run(recipe, args.metadata, args.labels, args.images_dir, args.out, num_workers=args.num_workers,
                      use_gpu=args.use_gpu, cpus_per_worker=args.cpus_per_worker, decode=args.decode))
        return 0
    # One run folder, one job: a second train.py on it is refused, naming the holder, before Ray starts.
    with RunLock(args.out, job="train.py"):
        init_ray(args.address)
        summary = run_training(
            recipe,
            metadata=args.metadata,
            labels=args.labels,
            images_dir=args.images_dir,
            out_dir=args.out,
            num_workers=args.num_workers,
            use_gpu=args.use_gpu,
            cpus_per_worker=args.cpus_per_worker,
            max_failures=args.max_failures,
            overwrite=args.overwrite,
            decode=args.decode,
        )
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
