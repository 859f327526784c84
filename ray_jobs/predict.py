"""Score a season with Ray Data: flip TTA, geometric means within sequences and across models.

The competition:

    python ray_jobs/predict.py --model RUN_DIR/model.pt [--model OTHER/model.pt ...] \
        --metadata test_metadata.csv --images-dir DIR --out submission.csv \
        --submission-format submission_format.csv [--work-dir DIR] [--aggregate gmean|mean|empty-gmean] \
        [--decode exact|fast [--force-decode]] [--batch-size N] [--amp auto|off|bf16|fp16]

A folder of camera-trap images (a folder per camera), results for field tools:

    python ray_jobs/predict.py --model RUN_DIR/model.pt --images-dir CARD/ --out results/ \
        [--format csv --format camtrap-dp --format megadetector] [--utc-offset +03:00] \
        [--deployments deployments.csv] [--taxa taxa.csv] [--threshold 0.5]

Without --metadata the images are grouped into sequences per camera folder by their EXIF capture
times (results/sequences.csv: review it, correct it, pass it back as --metadata). Rerunning with the
same work dir resumes: images already scored are not scored again.
"""

import argparse
import sys

import _bootstrap  # noqa: F401

from camtrap import cli
from camtrap.errors import exits_on_input_error
from camtrap.export import ExportSettings
from camtrap.infer.actors import AMP_MODES, CPU_SCORING_BATCH, GPU_SCORING_BATCH
from camtrap.infer.predict import FORMATS, predict
from camtrap.runtime import init_ray


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.job_parser(__doc__)
    p.add_argument("--model", action="append", required=True, help="model.pt written by train.py; repeat for an ensemble")
    cli.add_sequences(p)
    cli.add_images_dir(p, help="raw or prepared images, folder or URI")
    p.add_argument("--out", required=True,
                   help="the submission CSV (with --format submission alone), else a folder for the formats")
    p.add_argument("--format", action="append", choices=list(FORMATS), default=None, dest="formats",
                   help="repeatable; default: submission when --submission-format is given or --out names a .csv "
                        "file, else csv, camtrap-dp and megadetector")
    p.add_argument("--submission-format", default=None, help="row and column order of the submission")
    p.add_argument("--threshold", type=float, default=ExportSettings.threshold,
                   help="a class at or above this sequence probability is reported present (default %(default)s)")
    p.add_argument("--taxa", default=None,
                   help="class -> taxon CSV (class,scientificName[,taxonRank,vernacularName,observationType,sex]); "
                        "default: the packaged Snapshot Serengeti list, other classes keep their names")
    p.add_argument("--deployments", default=None,
                   help="Camtrap DP deployments CSV by deploymentID (= camera folder): coordinates and setup")
    p.add_argument("--package-metadata", default=None,
                   help="JSON object merged into Camtrap DP's datapackage.json (project, contributors, licenses)")
    p.add_argument("--utc-offset", default=ExportSettings.utc_offset,
                   help="the camera clocks' offset from UTC, +HH:MM (default %(default)s)")
    p.add_argument("--work-dir", default=None, help="per-image predictions (Parquet parts); default OUT_work/")
    p.add_argument("--aggregate", choices=["gmean", "mean", "empty-gmean"], default="gmean",
                   help="within a sequence and across models (default gmean, the 2nd place's)")
    p.add_argument("--batch-size", type=cli.int_at_least(1), default=None,
                   help=f"images per model-actor call (default: sized for the actors' device, {GPU_SCORING_BATCH} "
                        f"on a GPU, {CPU_SCORING_BATCH} on a CPU; lower it for a large model on a small GPU)")
    p.add_argument("--amp", choices=list(AMP_MODES), default="auto",
                   help="autocast of the model actors (default auto: bf16 from CUDA compute capability 8.0, fp16 "
                        "below, off on CPU); the sigmoid is taken in float32 either way")
    p.add_argument("--use-gpu", action=argparse.BooleanOptionalAction, default=None,
                   help="one GPU per model actor (default: auto, GPUs if the cluster has them or its autoscaler "
                        "can add them)")
    cli.add_rows_per_task(p, 64, "images per decode task; also how often results are saved for resume")
    p.add_argument("--actors-per-model", type=cli.pool_range, default=None, metavar="N|MIN..MAX",
                   help="model actors per model: a fixed N, or a pool that grows from MIN to MAX while images "
                        "queue (default: 1 up to every GPU the cluster can reach, shared among the models)")
    cli.add_decode(p, None, "decode mode of raw frames (default: the one the models were trained with; a prepared "
                            "folder's own)")
    p.add_argument("--force-decode", action="store_true",
                   help="score even where the decode mode differs from a model's training mode, or the ensemble's "
                        "models differ (refused by default: decode differences cost score)")
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
        formats=args.formats, sequence_gap=args.sequence_gap,
        export=ExportSettings(threshold=args.threshold, taxa=args.taxa, deployments=args.deployments,
                              package_metadata=args.package_metadata, utc_offset=args.utc_offset),
        decode=args.decode, force_decode=args.force_decode, amp=args.amp,
    )
    if summary.processed == 0:
        print("predict: nothing to score, every image is already scored; the outputs were rewritten from "
              "the saved results")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
