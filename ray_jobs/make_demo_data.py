"""Generate a synthetic camera-trap dataset in the Snapshot Serengeti competition layout.

    python ray_jobs/make_demo_data.py --out data/demo --sequences 240 --seed 0 \
        [--species zebra,giraffe,elephant] [--small | --frame-sizes 2048x1536[,WxH...]] [--workers 2]

Writes images/<season>/<site>/<site>_R<roll>/*.JPG, train_metadata.csv, train_labels.csv,
test_metadata.csv, test_labels.csv and submission_format.csv under --out. Same seed, same bytes.
"""

import argparse
import os
import sys
import time

import _bootstrap  # noqa: F401

from camtrap.demo import DEFAULT_SIZES, DEFAULT_SPECIES, SMALL_SIZES, make_demo_dataset
from camtrap.demo.planning import parse_sizes


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--out", required=True, help="output folder (created; files of the same names are overwritten)"
    )
    p.add_argument(
        "--sequences", type=int, default=240, help="number of sequences, train and test (default 240)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed gives identical files (default 0)"
    )
    p.add_argument(
        "--species",
        default=",".join(DEFAULT_SPECIES),
        help=f"comma-separated competition class names (default {','.join(DEFAULT_SPECIES)})",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.25,
        help="share of sequences in the test season (default 0.25)",
    )
    sizes = p.add_mutually_exclusive_group()
    sizes.add_argument(
        "--small",
        action="store_true",
        help=f"tiny images for tests ({', '.join(f'{w}x{h}' for w, h in SMALL_SIZES)}) instead of full size",
    )
    sizes.add_argument(
        "--frame-sizes",
        default=None,
        help="camera sizes WxH[,WxH...], one per camera site (default "
        f"{','.join(f'{w}x{h}' for w, h in DEFAULT_SIZES)})",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="processes that render images; the output does not depend on it (default: CPUs, at most 4)",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    species = [s.strip() for s in args.species.split(",") if s.strip()]
    started = time.perf_counter()
    try:
        sizes = SMALL_SIZES if args.small else parse_sizes(args.frame_sizes) if args.frame_sizes else DEFAULT_SIZES
        summary = make_demo_dataset(
            args.out,
            num_sequences=args.sequences,
            seed=args.seed,
            species=species,
            test_fraction=args.test_fraction,
            image_sizes=sizes,
            num_workers=args.workers,
        )
    except (ValueError, TypeError) as err:
        print(f"make_demo_data: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    size_text = ", ".join(f"{w}x{h}" for w, h in sizes)
    print(
        f"Wrote {summary.num_sequences} sequences ({summary.num_train_sequences} train in "
        f"{'+'.join(summary.train_seasons)}, {summary.num_test_sequences} test in {'+'.join(summary.test_seasons)}) "
        f"with {summary.num_images} images ({summary.num_train_images} train, {summary.num_test_images} test; "
        f"sizes {size_text}) to {summary.out_dir}: {summary.empty_fraction:.0%} empty, "
        f"{summary.num_two_species_sequences} with two species, {summary.num_night_sequences} at night; "
        f"species {', '.join(summary.species)}; seed {args.seed}; {seconds:.1f} s with {args.workers} worker(s)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
