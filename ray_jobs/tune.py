"""Search a recipe's warmup/cosine hyperparameters and crop ratio with Ray Tune (ASHA), resumably.

    python ray_jobs/tune.py --space tune_spaces/cpu_smoke.yaml --recipe cpu_tiny \
        --metadata train_metadata.csv --labels train_labels.csv --images-dir PREPARED_DIR --out SWEEP_DIR \
        [--num-samples N] [--max-concurrent N] [--decode exact|fast  (raw images only)]

Writes SWEEP_DIR/results.csv (one row per trial) and SWEEP_DIR/best_recipe.yaml (usable as
train.py --recipe). Rerunning the same command resumes an interrupted sweep.
"""

import argparse
import sys

import _bootstrap  # noqa: F401

from camtrap import cli
from camtrap.config.recipe import load_recipe
from camtrap.config.tune_space import load_tune_space, validate_against_recipe
from camtrap.data import storage
from camtrap.data.lock import RunLock
from camtrap.data.sequences import SEQUENCES_FILE, metadata_or_sequences
from camtrap.errors import exits_on_input_error
from camtrap.runtime import init_ray
from camtrap.tune.sweep import run_sweep


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.job_parser(__doc__)
    p.add_argument("--space", required=True, help="search space YAML (tune_spaces/NAME.yaml) or a name")
    cli.add_recipe(p, overrides=False)
    cli.add_sequences(p)
    cli.add_labels(p)
    cli.add_images_dir(p, help="prepared images (the output of prepare.py) or raw frames, folder or URI")
    cli.add_decode(p, None, "decode mode of raw --images-dir frames, the same for every trial (default exact; a "
                   "prepared folder brings its own)")
    p.add_argument("--out", required=True, help="sweep directory")
    p.add_argument("--num-samples", type=int, default=None, help="trials (default: the space's)")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: the space's)")
    return p.parse_args(argv)


@exits_on_input_error
def main(argv=None) -> int:
    args = parse_args(argv)
    space = load_tune_space(args.space)
    recipe = load_recipe(args.recipe)
    validate_against_recipe(space, recipe)
    metadata = metadata_or_sequences(args.metadata, args.images_dir, storage.join(args.out, SEQUENCES_FILE),
                                     args.sequence_gap, job="tune")
    with RunLock(args.out, job="tune.py"):  # one sweep folder, one job
        init_ray(args.address)
        summary = run_sweep(space, recipe, metadata, args.labels, args.images_dir, args.out,
                            num_samples=args.num_samples, max_concurrent=args.max_concurrent, decode=args.decode)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
