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

from camtrap.errors import InputError, exits_on_input_error
from camtrap.evaluate.report import make_report


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run directory written by train.py (metrics.csv, stages/)")
    p.add_argument("--out", required=True, help="folder or URI for the report")
    p.add_argument("--submission", default=None, help="submission CSV written by predict.py")
    p.add_argument("--labels", default=None, help="labels CSV of the submission's sequences")
    p.add_argument("--metadata", action="append", default=None,
                   help="metadata CSV (seq_id,file_name) of the submission's sequences; repeatable")
    p.add_argument("--images-dir", default=None, help="raw or prepared images, folder or URI")
    p.add_argument("--top", type=int, default=24, help="sequences in the worst-loss gallery (default 24)")
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
