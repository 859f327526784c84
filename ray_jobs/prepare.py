"""Decode, orient and resize every image of the metadata files with Ray Data (resumable).

    python ray_jobs/prepare.py --metadata train_metadata.csv --metadata test_metadata.csv \
        --images-dir data/images --out data/prepared [--long-side 512] [--quality 95] [--decode exact|fast]

Without --metadata, every image under --images-dir is prepared and grouped into sequences by its
camera folder and EXIF capture time (OUT/sequences.csv; train.py and predict.py reuse it).
"""

import argparse
import os
import sys

import _bootstrap  # noqa: F401

from camtrap import cli
from camtrap.data import storage
from camtrap.data.imageio import DEFAULT_MAX_PIXELS, PREPARE_LONG_SIDE
from camtrap.data.prepare import ERROR, STATUS, STATUS_OK, PrepareSettings, prepare_images
from camtrap.data.sequences import SEQUENCES_FILE, metadata_or_sequences
from camtrap.errors import exits_on_input_error
from camtrap.runtime import init_ray


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.job_parser(__doc__)
    cli.add_sequences(p)
    cli.add_images_dir(p)
    p.add_argument("--out", required=True, help="output folder or URI: resized JPEGs at the same relative paths, manifest")
    p.add_argument("--long-side", type=cli.int_at_least(16), default=PREPARE_LONG_SIDE,
                   help=f"long side after resizing (default {PREPARE_LONG_SIDE})")
    p.add_argument("--quality", type=cli.int_in(1, 100), default=95, help="JPEG quality of the outputs (default 95)")
    cli.add_decode(p, "exact", "decode mode, recorded in the manifest; training takes it from there (default exact)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="decompression-bomb limit in pixels")
    cli.add_overwrite(p, "redo every file instead of resuming")
    p.add_argument("--fail-on-error", action="store_true", help="exit 1 if any row failed")
    cli.add_rows_per_task(p, 32, "images per Ray task")
    p.add_argument("--follow-links", action="store_true",
                   help="read file names whose symbolic links lead outside --images-dir (refused by default)")
    return p.parse_args(argv)


@exits_on_input_error
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.follow_links:  # read by the Ray tasks too: workers inherit the driver's environment
        os.environ[storage.FOLLOW_LINKS_ENV] = "1"
    settings = PrepareSettings(long_side=args.long_side, quality=args.quality, max_pixels=args.max_pixels,
                               decode=args.decode)
    metadata = metadata_or_sequences(args.metadata, args.images_dir, storage.join(args.out, SEQUENCES_FILE),
                                     args.sequence_gap, job="prepare")
    summary, manifest = prepare_images(
        metadata, args.images_dir, args.out, settings, overwrite=args.overwrite, rows_per_task=args.rows_per_task,
        connect=lambda: init_ray(args.address),
    )
    errors = manifest[manifest[STATUS] != STATUS_OK]
    for msg in errors[ERROR].head(10):
        print(f"  error: {msg}")
    if len(errors) > 10:
        print(f"  ... {len(errors) - 10} more errors in {summary.manifest}")
    if summary.processed == summary.retried:
        print(f"prepare: nothing new to do: every file was already prepared, and the {summary.retried} files that "
              "failed before were retried (use --overwrite to redo all)")
    print(summary)
    return 1 if (args.fail_on_error and summary.errors) else 0


if __name__ == "__main__":
    sys.exit(main())
