"""Report on a training run (and, optionally, a submission), or on a Ray Tune sweep.

    python ray_jobs/report.py --run RUN_DIR --out DIR \
        [--submission submission.csv --labels test_labels.csv \
         [--metadata test_metadata.csv --images-dir DIR]] [--top N]
    python ray_jobs/report.py --sweep SWEEP_DIR --out DIR [--watch SECONDS]

--run writes into DIR: curves.png (per stage: loss, metric vs the class-prior baseline, LR); with a
submission and its labels, per_class.csv, summary.json and per_class.png (classes by contribution to the
metric); with metadata and images too, gallery.html, gallery.png and gallery.csv (the N worst sequences,
thumbnails under DIR/gallery/); and index.html linking everything.

--sweep writes into DIR: index.html (the trials table: parameters, status, best metric, epochs, errors),
sweep_curves.png (every trial's metric per epoch) and metric_vs_<parameter>.png (one per searched
parameter). It works on a running sweep too (from Tune's per-trial files), and then the page reloads
itself every few seconds; --watch SECONDS renders it again every SECONDS until the sweep has finished.

Invalid input exits 2 naming the file. Plots and a few dozen thumbnails take seconds on one process, so
this job does not start Ray.
"""

import argparse
import sys

import _bootstrap  # noqa: F401

from camtrap import cli
from camtrap.errors import InputError, exits_on_input_error
from camtrap.evaluate.report import DEFAULT_TOP, make_report
from camtrap.evaluate.sweep import make_sweep_report, watch_sweep_report

RUN_ONLY = ("submission", "labels", "metadata", "images_dir")


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.job_parser(__doc__, ray=False)
    p.add_argument("--run", default=None, metavar="RUN_DIR",
                   help="run directory written by train.py (metrics.csv, stages/)")
    p.add_argument("--sweep", default=None, metavar="SWEEP_DIR",
                   help="sweep directory written by tune.py (results.csv, sweep/)")
    p.add_argument("--out", required=True, help="folder or URI for the report")
    p.add_argument("--submission", default=None, help="with --run: submission CSV written by predict.py")
    cli.add_labels(p, required=False, help="with --run: labels CSV of the submission's sequences")
    cli.add_metadata(p, required=False, help="with --run: metadata CSV (seq_id,file_name) of the submission's "
                                             "sequences; repeatable")
    cli.add_images_dir(p, required=False, help="with --run: raw or prepared images, folder or URI")
    p.add_argument("--top", type=int, default=DEFAULT_TOP,
                   help=f"with --run: sequences in the worst-loss gallery (default {DEFAULT_TOP})")
    p.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                   help="with --sweep: render again every SECONDS until the sweep has finished")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Exactly one of --run and --sweep, and only the options that go with it."""
    if (args.run is None) == (args.sweep is None):
        raise InputError("give exactly one of --run RUN_DIR (a training run) and --sweep SWEEP_DIR (a tune sweep)")
    if args.sweep is not None:
        given = [f"--{name.replace('_', '-')}" for name in RUN_ONLY if getattr(args, name) is not None]
        if given:
            raise InputError(f"{', '.join(given)} go(es) with --run, not --sweep")
    elif args.watch is not None:
        raise InputError("--watch goes with --sweep, not --run")
    if args.top < 1:
        raise InputError(f"--top must be at least 1, got {args.top}")


@exits_on_input_error
def main(argv=None) -> int:
    args = parse_args(argv)
    check_args(args)
    if args.sweep is not None and args.watch is not None:
        summary = watch_sweep_report(args.sweep, args.out, args.watch)
    elif args.sweep is not None:
        summary = make_sweep_report(args.sweep, args.out)
    else:
        summary = make_report(args.run, args.out, submission=args.submission, labels=args.labels,
                              metadata=args.metadata, images_dir=args.images_dir, top=args.top)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
