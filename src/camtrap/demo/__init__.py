"""Demo data: a generated camera-trap dataset in exactly the Snapshot Serengeti competition layout.

Why: the real data is 5 TB and cannot ship with tests, demos or CI. Every job of the platform (prepare,
train, tune, predict, score) reads the same files as in the competition: ``images/<season>/<site>/...JPG``,
``train_metadata.csv``, ``train_labels.csv``, ``test_metadata.csv``, ``submission_format.csv``. The
generator writes those files from a seed, with the properties the pipeline must cope with: full-size
JPEGs in 4:3 and 16:9, sequences of 1-3 frames that share one scene, night frames stored as grayscale
(mode ``L``) or as RGB with R=G=B, about two thirds ``empty`` sequences and a few with two species.
Animals are drawn silhouettes, one shape, colour and coat pattern per species, most of them big enough
to survive a resize to a 128-pixel long side (about one in ten stands far off, small; night animals are
dim where the flash is weak), so a small CNN trained from scratch on a CPU learns them in minutes: a
real end-to-end check, not just a smoke test. The same seed gives byte-identical files.

Modules: :mod:`.planning` (sequences, sites, times, labels), :mod:`.scenes` (backgrounds, night,
info strip), :mod:`.species` (what each species looks like), :mod:`.animals` (animals placed in a
sequence), :mod:`.writing` (JPEGs, CSV files and :func:`make_demo_dataset`).
"""

from camtrap.demo.planning import DEFAULT_SIZES, DEFAULT_SPECIES, SMALL_SIZES, TEST_SEASONS, TRAIN_SEASONS
from camtrap.demo.writing import DemoSummary, make_demo_dataset

__all__ = [
    "DEFAULT_SIZES",
    "DEFAULT_SPECIES",
    "SMALL_SIZES",
    "TEST_SEASONS",
    "TRAIN_SEASONS",
    "DemoSummary",
    "make_demo_dataset",
]
