"""Report on a training run and, optionally, a submission: curves, per-class chart, worst-loss gallery.

    python ray_jobs/report.py --run RUN_DIR --out DIR \
        [--submission submission.csv --labels test_labels.csv \
         [--metadata test_metadata.csv --images-dir DIR]] [--top N]

Writes into DIR: curves.png (per stage: loss, metric vs the class-prior baseline, LR); with a submission
and its labels, per_class.csv, summary.json and per_class.png (classes by contribution to the metric);
with metadata and images too, gallery.html, gallery.png and gallery.csv (the N worst sequences, thumbnails
under DIR/gallery/); and index.html linking everything. Invalid input exits 2 naming the file.

Plots and a few dozen thumbnails take seconds on one process, so this job does not start Ray.
"""

import argparse
import sys

import _bootstrap  # noqa: F401

from camtrap import cli
from camtrap.errors import InputError, exits_on_input_error
from camtrap.evaluate.report import DEFAULT_TOP, make_report


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.job_parser(__doc__, ray=False)
    p.add_argument("--run", required=True, help="run directory written by train.py (metrics.csv, stages/)")
    p.add_argument("--out", required=True, help="folder or URI for the report")
    p.add_argument("--submission", default=None, help="submission CSV written by predict.py")
    cli.add_labels(p, required=False, help="labels CSV of the submission's sequences")
    cli.add_metadata(p, required=False, help="metadata CSV (seq_id,file_name) of the submission's sequences; repeatable")
    cli.add_images_dir(p, required=False, help="raw or prepared images, folder or URI")
    p.add_argument("--top", type=int, default=DEFAULT_TOP, help=f"sequences in the worst-loss gallery (default {DEFAULT_TOP})")
    return p.parse_args(argv)


@exits_on_input_error
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.top < 1:
        raise InputError(f"--top must be at least 1, got {args.top}")
    summary = make_report(args.run, args.out, submission=args.submission, labels=args.labels,
                          metadata=args.metadata, images_dir=args.images_dir, top=args.top)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
