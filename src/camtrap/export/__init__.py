"""Outputs people's tools read: a per-sequence CSV, a Camtrap DP package, MegaDetector batch JSON.

All are written from one :class:`~camtrap.export.season.ScoredSeason`, so they agree on every number
and each accounts for every image (``failed_images.csv`` lists the ones that could not be scored).
"""

from __future__ import annotations

from camtrap.data import storage
from camtrap.data.classes import FILE_NAME, SEQ_ID
from camtrap.data.frames import ERROR
from camtrap.export.camtrap_dp import write_camtrap_dp
from camtrap.export.megadetector import write_megadetector
from camtrap.export.season import ExportSettings, ScoredSeason
from camtrap.export.table import write_table
from camtrap.export.taxa import OBSERVATION_TYPE, load_taxa

__all__ = ["FIELD_FORMATS", "FAILED_IMAGES_FILE", "ExportSettings", "ScoredSeason", "write_field_formats"]

#: ``--format`` names of the field formats (``submission`` is the competition CSV, written elsewhere).
FIELD_FORMATS = ("csv", "camtrap-dp", "megadetector")
#: Every image that could not be scored, with its reason (in the output folder).
FAILED_IMAGES_FILE = "failed_images.csv"


def write_field_formats(
    season: ScoredSeason, formats: list[str], out_dir: str, settings: ExportSettings
) -> tuple[dict[str, str], list[str]]:
    """Write each of ``formats`` and ``failed_images.csv`` into ``out_dir``; returns (paths, warnings)."""
    taxa, warnings = load_taxa(season.classes, settings.taxa)
    storage.makedirs(out_dir)
    written = {}
    if "csv" in formats:
        written["csv"] = write_table(season, out_dir, settings, taxa[OBSERVATION_TYPE])
    if "camtrap-dp" in formats:
        written["camtrap-dp"] = write_camtrap_dp(season, out_dir, settings, taxa)
    if "megadetector" in formats:
        written["megadetector"] = write_megadetector(season, out_dir, settings, taxa)
    failed = season.images.loc[season.images[ERROR] != "", [FILE_NAME, SEQ_ID, ERROR]]
    path = storage.join(out_dir, FAILED_IMAGES_FILE)
    storage.write_bytes_atomic(path, failed.rename(columns={ERROR: "reason"}).to_csv(index=False).encode())
    written["failed images"] = path
    return written, warnings
