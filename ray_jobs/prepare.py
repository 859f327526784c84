"""Decode, orient and resize every image of the metadata files with Ray Data (resumable).

    python ray_jobs/prepare.py --metadata train_metadata.csv --metadata test_metadata.csv \
        --images-dir data/images --out data/prepared [--long-side 512] [--quality 95]
"""

import argparse
import sys

import _bootstrap  # noqa: F401

from camtrap.data.imageio import DEFAULT_MAX_PIXELS, PREPARE_LONG_SIDE
from camtrap.data.prepare import PrepareSettings, prepare_images
from camtrap.errors import exits_on_input_error
from camtrap.runtime import init_ray


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--metadata", action="append", required=True, help="metadata CSV (seq_id,file_name[,datetime]); repeatable")
    p.add_argument("--images-dir", required=True, help="folder or URI (s3://, gs://) the file_names are relative to")
    p.add_argument("--out", required=True, help="output folder or URI: resized JPEGs at the same relative paths, manifest")
    p.add_argument("--long-side", type=int, default=PREPARE_LONG_SIDE,
                   help=f"long side after resizing (default {PREPARE_LONG_SIDE})")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality of the outputs (default 95)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="decompression-bomb limit in pixels")
    p.add_argument("--overwrite", action="store_true", help="redo every file instead of resuming")
    p.add_argument("--fail-on-error", action="store_true", help="exit 1 if any row failed")
    p.add_argument("--rows-per-task", type=int, default=32, help="images per Ray task")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    return p.parse_args(argv)


@exits_on_input_error
def main(argv=None) -> int:
    args = parse_args(argv)
    init_ray(args.address)
    settings = PrepareSettings(long_side=args.long_side, quality=args.quality, max_pixels=args.max_pixels)
    summary, manifest = prepare_images(
        args.metadata, args.images_dir, args.out, settings, overwrite=args.overwrite, rows_per_task=args.rows_per_task
    )
    errors = manifest[manifest["status"] != "ok"]
    for msg in errors["error"].head(10):
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
