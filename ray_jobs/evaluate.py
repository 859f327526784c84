"""Score a submission CSV against the labels with the competition metric (mean binary log loss).

    python ray_jobs/evaluate.py --submission submission.csv --labels test_labels.csv [--report-dir DIR]

Checks the submission first (a seq_id column and exactly the labels' class columns in any order; every
labelled seq_id exactly once; every probability a finite number in [0, 1]) and exits 2 naming the file,
line and column of the first problems. Prints the classes that contribute most to the metric, then, as
its last line, exactly ``mean_binary_log_loss=<value>``. With --report-dir, writes per_class.csv (sorted
by contribution) and summary.json there. Paths may be local or URIs (s3://, gs://).

Scoring one CSV takes milliseconds in pandas, so this job does not start Ray.
"""

import argparse
import sys

import _bootstrap  # noqa: F401

from camtrap import cli
from camtrap.errors import exits_on_input_error
from camtrap.evaluate.submission import evaluate_submission, format_report, prior_baseline, write_report


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.job_parser(__doc__, ray=False)
    p.add_argument(
        "--submission", required=True, help="submission CSV: seq_id and one probability column per class"
    )
    cli.add_labels(p)
    p.add_argument("--report-dir", default=None, help="folder or URI for per_class.csv and summary.json")
    p.add_argument("--top", type=int, default=10, help="how many classes to print (default 10)")
    p.add_argument("--prior-baseline", default=None, metavar="MODEL_PT",
                   help="also print the metric of predicting this model's training class priors")
    return p.parse_args(argv)


@exits_on_input_error
def main(argv=None) -> int:
    args = parse_args(argv)
    result = evaluate_submission(args.submission, args.labels)
    if args.report_dir:
        for path in write_report(result, args.report_dir):
            print(f"wrote {path}")
    if args.prior_baseline:
        base = prior_baseline(args.prior_baseline, args.labels)
        print(f"class-prior baseline: {base:.6f}; this submission: {result.loss:.6f} "
              f"({100 * (1 - result.loss / base):+.1f}% better)")
    print(format_report(result, top=args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
