"""Score a season with Ray Data: flip TTA, geometric means within sequences and across models.

    python ray_jobs/predict.py --model RUN_DIR/model.pt [--model OTHER/model.pt ...] \
        --metadata test_metadata.csv --images-dir DIR --out submission.csv \
        [--submission-format submission_format.csv] [--work-dir DIR] [--aggregate gmean|mean|empty-gmean]

Rerunning with the same work dir resumes: images already scored are not scored again.
"""

import argparse
import sys

import _bootstrap  # noqa: F401

from camtrap import cli
from camtrap.errors import exits_on_input_error
from camtrap.infer.predict import predict
from camtrap.runtime import init_ray


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.job_parser(__doc__)
    p.add_argument("--model", action="append", required=True, help="model.pt written by train.py; repeat for an ensemble")
    cli.add_metadata(p)
    cli.add_images_dir(p, help="raw or prepared images, folder or URI")
    p.add_argument("--out", required=True, help="submission CSV to write")
    p.add_argument("--submission-format", default=None, help="row and column order of the submission")
    p.add_argument("--work-dir", default=None, help="per-image predictions (Parquet parts); default OUT_work/")
    p.add_argument("--aggregate", choices=["gmean", "mean", "empty-gmean"], default="gmean",
                   help="within a sequence and across models (default gmean, the 2nd place's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--use-gpu", action=argparse.BooleanOptionalAction, default=None,
                   help="one GPU per model actor (default: auto, GPUs if the cluster has them or its autoscaler "
                        "can add them)")
    cli.add_rows_per_task(p, 64, "images per decode task; also how often results are saved for resume")
    p.add_argument("--actors-per-model", type=cli.pool_range, default=None, metavar="N|MIN..MAX",
                   help="model actors per model: a fixed N, or a pool that grows from MIN to MAX while images "
                        "queue (default: 1 up to every GPU the cluster can reach, shared among the models)")
    cli.add_overwrite(p, "discard the work dir's saved per-image results and score every image again")
    return p.parse_args(argv)


@exits_on_input_error
def main(argv=None) -> int:
    args = parse_args(argv)
    summary, _ = predict(
        args.model, args.metadata, args.images_dir, args.out,
        submission_format=args.submission_format, work_dir=args.work_dir, how=args.aggregate,
        batch_size=args.batch_size, use_gpu=args.use_gpu, actors_per_model=args.actors_per_model,
        rows_per_task=args.rows_per_task, overwrite=args.overwrite, connect=lambda: init_ray(args.address),
    )
    if summary.processed == 0:
        print("predict: nothing to score, every image is already scored; the submission was rewritten from "
              "the saved results")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
