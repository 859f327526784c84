"""The arguments every job script shares, declared once.

Job scripts in ``ray_jobs/`` stay thin: each builds its parser from these groups, adds its own flags,
and hands the parsed values to the library. One declaration per argument means one spelling, one
default and one help text across prepare, train, tune, predict, evaluate and report.
"""

from __future__ import annotations

import argparse
import os

from camtrap.console import VERBOSE_ENV
from camtrap.data.sequences import DEFAULT_SEQUENCE_GAP_S

__all__ = [
    "add_decode",
    "add_images_dir",
    "add_labels",
    "add_metadata",
    "add_overwrite",
    "add_recipe",
    "add_rows_per_task",
    "add_sequences",
    "job_parser",
]


class _Verbose(argparse.Action):
    """``--verbose``: set as the job's environment, which its Ray workers inherit (camtrap.console)."""

    def __call__(self, parser, namespace, values, option_string=None):
        os.environ[VERBOSE_ENV] = "1"
        setattr(namespace, self.dest, True)


def job_parser(doc: str | None, ray: bool = True) -> argparse.ArgumentParser:
    """A job's parser: its module docstring as the description; ``--address`` for jobs that use Ray."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--verbose", action=_Verbose, nargs=0,
                   help="show Ray's own console output too (progress blocks, INFO lines, warnings)")
    if ray:
        p.add_argument("--address", default=None,
                       help="Ray cluster address (default: RAY_ADDRESS, else a Ray started in this process)")
    return p


def add_metadata(p: argparse.ArgumentParser, required: bool = True, help: str | None = None) -> None:
    """``--metadata CSV``, repeatable (a train and a test file, or one per season)."""
    p.add_argument("--metadata", action="append", required=required,
                   help=help or "metadata CSV (seq_id,file_name[,datetime]); repeatable")


def add_sequences(p: argparse.ArgumentParser) -> None:
    """``--metadata`` (optional) and ``--sequence-gap``: the sequences, given or grouped from the images' clocks."""
    add_metadata(p, required=False,
                 help="metadata CSV (seq_id,file_name[,datetime][,camera]); repeatable. Without it the images are "
                      "grouped into sequences per camera folder by their EXIF capture times, and the table is "
                      "written beside the outputs as sequences.csv")
    p.add_argument("--sequence-gap", type=_positive_float, default=None, metavar="SECONDS",
                   help=f"without --metadata: frames at least this far apart start a new sequence (default "
                        f"{DEFAULT_SEQUENCE_GAP_S:g}: one trigger's burst)")


def add_labels(p: argparse.ArgumentParser, required: bool = True, help: str | None = None) -> None:
    """``--labels CSV``: seq_id then one 0/1 column per class."""
    p.add_argument("--labels", required=required,
                   help=help or "labels CSV: seq_id then one 0/1 column per class")


def add_images_dir(p: argparse.ArgumentParser, required: bool = True, help: str | None = None) -> None:
    """``--images-dir``: the folder or URI that ``file_name`` is relative to."""
    p.add_argument("--images-dir", required=required,
                   help=help or "folder or URI (s3://, gs://) the file_names are relative to")


def add_decode(p: argparse.ArgumentParser, default: str | None, help: str) -> None:
    """``--decode exact|fast``: how full-size JPEGs become pixels (:mod:`camtrap.data.imageio`'s modes)."""
    from camtrap.data.imageio import DECODE_MODES

    p.add_argument("--decode", choices=DECODE_MODES, default=default,
                   help=f"{help}. exact: every pixel, then LANCZOS (the seed's bytes); fast: a JPEG decoded at "
                        "1/2-1/8 scale in the DCT domain first, same output sizes, mean pixel gap under 1.5 levels")


def add_recipe(p: argparse.ArgumentParser, overrides: bool = True) -> None:
    """``--recipe`` (a YAML file or a packaged name) and, with ``overrides``, repeatable ``--set KEY=VALUE``."""
    p.add_argument("--recipe", required=True,
                   help="recipe YAML file, or a packaged name: rx50_swsl, rx101_wsl, cpu_tiny")
    if overrides:
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe field, e.g. stages.0.lr=0.01; repeatable")


def add_rows_per_task(p: argparse.ArgumentParser, default: int, help: str) -> None:
    """``--rows-per-task``: images per Ray Data task (the unit of work and of saved progress)."""
    p.add_argument("--rows-per-task", type=_positive_int, default=default, help=f"{help} (default {default})")


def add_overwrite(p: argparse.ArgumentParser, help: str) -> None:
    """``--overwrite``: start again instead of resuming what the output folder holds."""
    p.add_argument("--overwrite", action="store_true", help=help)


def int_in(low: int, high: int | None = None):
    """An argparse ``type``: an integer in ``[low, high]`` (no upper bound with ``high=None``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"at least {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


def int_at_least(low: int):
    """An argparse ``type``: an integer of at least ``low``."""
    return int_in(low)


_positive_int = int_at_least(1)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def pool_range(text: str) -> tuple[int, int]:
    """An argparse ``type``: ``N`` (a fixed pool) or ``MIN..MAX`` (a pool that grows from MIN to MAX)."""
    lo, sep, hi = str(text).partition("..")
    try:
        pool = (int(lo), int(hi) if sep else int(lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN..MAX (e.g. 1..8), got {text!r}") from None
    if pool[0] < 1 or pool[1] < pool[0]:
        raise argparse.ArgumentTypeError(f"expected 1 <= MIN <= MAX, got {text!r}")
    return pool
