"""The ``megadetector`` format: MegaDetector's batch output (format 1.5), which Timelapse and AddaxAI read.

camtrap classifies whole frames; it has no detector and no boxes. Each scored image therefore gets
one whole-image detection, ``bbox [0, 0, 1, 1]``, whose ``conf`` is the probability that the frame is
not empty (1 - P(empty); the best non-empty class's probability when the model has no empty class)
and whose ``category`` is animal, person or vehicle after the best non-empty class's observation
type. Its ``classifications`` are the top non-empty classes, best first, as the format requires.
The probabilities are the *sequence's* (flip TTA and the geometric mean over the sequence's frames):
the model's evidence is the burst, and Timelapse users threshold on ``conf`` exactly as they would
a detector's. An image that could not be read carries a ``failure`` string and ``detections: null``.
"""

from __future__ import annotations

import json

import pandas as pd

from camtrap.data import storage
from camtrap.data.classes import FILE_NAME, SEQ_ID
from camtrap.data.frames import ERROR
from camtrap.export.season import ExportSettings, ScoredSeason, top_classes
from camtrap.export.taxa import OBSERVATION_TYPE, SCIENTIFIC_NAME

MEGADETECTOR_FILE = "megadetector.json"
FORMAT_VERSION = "1.5"
DETECTION_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}
_CATEGORY_OF_TYPE = {"animal": "1", "human": "2", "vehicle": "3"}
WHOLE_IMAGE = [0.0, 0.0, 1.0, 1.0]


def _detection(probs: pd.Series, blank: list[str], objects: list[str], categories: dict[str, str],
               ids: dict[str, str], top_k: int) -> dict:
    """The whole-image detection of a sequence's images; ``blank``/``objects`` split the classes."""
    found = probs[objects]
    conf = 1.0 - float(probs[blank].max()) if blank else float(found.max())
    return {
        "category": categories[found.idxmax()],
        "conf": round(min(max(conf, 0.0), 1.0), 4),
        "bbox": WHOLE_IMAGE,
        "classifications": [[ids[c], round(p, 4)] for c, p in top_classes(found, top_k)],
    }


def megadetector_results(season: ScoredSeason, settings: ExportSettings, taxa: pd.DataFrame) -> dict:
    """The results document (see the module docstring)."""
    ids = {c: str(i) for i, c in enumerate(season.classes)}
    types = taxa.loc[season.classes, OBSERVATION_TYPE]
    blank = [c for c in season.classes if types[c] == "blank"]
    objects = [c for c in season.classes if types[c] != "blank"]
    categories = {c: _CATEGORY_OF_TYPE.get(types[c], "1") for c in objects}
    failure = season.failure_of()
    detections = {seq_id: _detection(probs, blank, objects, categories, ids, settings.top_k)
                  for seq_id, probs in season.sequences[season.classes].iterrows() if seq_id not in failure}
    images = []
    for seq_id, name, error in season.images[[SEQ_ID, FILE_NAME, ERROR]].itertuples(index=False, name=None):
        if error or seq_id not in detections:
            images.append({"file": name, "failure": error or failure.get(seq_id, "not scored"), "detections": None})
        else:
            images.append({"file": name, "detections": [detections[seq_id]]})
    stamp = season.finished.strftime("%Y-%m-%d %H:%M:%S")
    return {
        "info": {
            "format_version": FORMAT_VERSION,
            "detector": "none (camtrap whole-image classifier: one [0, 0, 1, 1] box per image)",
            "detection_completion_time": stamp,
            "classifier": season.classifier,
            "classification_completion_time": stamp,
            "classifier_metadata": {
                "level": "sequence (flip TTA, geometric mean over the frames of each sequence)",
                "conf": "1 - P(empty) of the image's sequence",
                "typical_classification_threshold": settings.threshold,
            },
        },
        "detection_categories": DETECTION_CATEGORIES,
        "classification_categories": {i: c for c, i in ids.items()},
        "classification_category_descriptions": {
            ids[c]: taxa.loc[c, SCIENTIFIC_NAME] or c for c in season.classes},
        "images": images,
    }


def write_megadetector(season: ScoredSeason, out_dir: str, settings: ExportSettings, taxa: pd.DataFrame) -> str:
    """``OUT/megadetector.json``; returns its path."""
    path = storage.join(out_dir, MEGADETECTOR_FILE)
    doc = megadetector_results(season, settings, taxa)
    storage.write_bytes_atomic(path, (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode())
    return path
