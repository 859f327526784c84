"""The field formats: the per-sequence CSV, Camtrap DP 1.0.2 (validated offline) and MegaDetector JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from camtrap_dp import error_lines, validate_package

from camtrap.data.classes import COMPETITION_CLASSES
from camtrap.errors import InputError
from camtrap.export import ExportSettings, ScoredSeason, write_field_formats
from camtrap.export.taxa import load_taxa

CLASSES = ["zebra", "lionmale", "empty", "human", "vehicle"]
PROBS = {  # seq_id -> sequence probabilities
    "camA/1.jpg": [0.92, 0.60, 0.02, 0.01, 0.01],  # two animals above 0.5
    "camA/5.jpg": [0.05, 0.03, 0.95, 0.01, 0.01],  # blank
    "camB/1.jpg": [0.30, 0.10, 0.20, 0.45, 0.02],  # nothing reaches 0.5: the best guess, a human
    "camB/7.jpg": [0.10, 0.10, 0.30, 0.10, 0.10],  # no usable image: the priors
}
IMAGES = [  # seq_id, file_name, datetime, camera, error
    ("camA/1.jpg", "camA/1.jpg", "2021-06-01 22:15:00", "camA", ""),
    ("camA/1.jpg", "camA/2.jpg", "2021-06-01 22:15:01", "camA", ""),
    ("camA/1.jpg", "camA/3.jpg", "2021-06-01 22:15:02", "camA", "camA/3.jpg: corrupt or truncated image"),
    ("camA/5.jpg", "camA/5.jpg", "2021-06-02 04:00:00", "camA", ""),
    ("camB/1.jpg", "camB/1.jpg", "", "camB", ""),
    ("camB/7.jpg", "camB/7.jpg", "2021-06-03 12:00:00", "camB", "camB/7.jpg: empty file (0 bytes)"),
]


@pytest.fixture
def season(tmp_path: Path) -> ScoredSeason:
    images_dir = tmp_path / "card"
    for _, name, *_ in IMAGES:
        (images_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (images_dir / name).write_bytes(b"x")
    sequences = pd.DataFrame.from_dict(PROBS, orient="index", columns=CLASSES)
    sequences.index.name = "seq_id"
    return ScoredSeason(
        classes=CLASSES, sequences=sequences,
        images=pd.DataFrame(IMAGES, columns=["seq_id", "file_name", "datetime", "camera", "error"]),
        failed=pd.DataFrame({"seq_id": ["camB/7.jpg"], "reason": ["camB/7.jpg: empty file (0 bytes)"]}),
        models=[{"sha256": "ab" * 32, "recipe": {"name": "cpu_tiny"}, "path": "m/model.pt"}],
        images_dir=str(images_dir),
    )


@pytest.fixture
def taxa_csv(tmp_path: Path) -> str:
    path = tmp_path / "taxa.csv"
    path.write_text("class,scientificName,taxonRank,vernacularName,observationType,sex\n"
                    "zebra,Equus quagga,species,plains zebra,,\n"
                    "lionmale,Panthera leo,species,lion,animal,male\n"
                    "empty,,,,blank,\n"
                    "human,Homo sapiens,species,human,human,\n")
    return str(path)


def _write(season, tmp_path, **settings):
    out = tmp_path / "results"
    written, warnings = write_field_formats(season, ["csv", "camtrap-dp", "megadetector"], str(out),
                                            ExportSettings(**settings))
    return out, written, warnings


def test_the_csv_has_one_row_per_sequence_with_top_classes_labels_and_failures(season, tmp_path, taxa_csv):
    out, written, _ = _write(season, tmp_path, taxa=taxa_csv)
    table = pd.read_csv(written["csv"], dtype=str, keep_default_na=False).set_index("seq_id")
    assert list(table.index) == list(PROBS)
    row = table.loc["camA/1.jpg"]
    assert (row["start"], row["end"]) == ("2021-06-01 22:15:00", "2021-06-01 22:15:02")
    assert (row["images"], row["failed_images"], row["files"]) == ("3", "1", "camA/1.jpg;camA/2.jpg;camA/3.jpg")
    assert (row["top1"], float(row["top1_probability"]), row["top2"]) == ("zebra", 0.92, "lionmale")
    assert row["labels"] == "zebra;lionmale"  # multi-label: both above 0.5
    assert table.loc["camA/5.jpg", "labels"] == "empty"
    assert table.loc["camB/1.jpg", "labels"] == "human"  # nothing reaches the threshold: the best guess
    assert table.loc["camB/7.jpg", "labels"] == "" and "empty file" in table.loc["camB/7.jpg", "failure"]
    failed = pd.read_csv(out / "failed_images.csv")
    assert list(failed["file_name"]) == ["camA/3.jpg", "camB/7.jpg"] and failed["reason"].str.len().min() > 10


def test_camtrap_dp_validates_against_the_standard_and_says_what_it_knows(season, tmp_path, taxa_csv):
    deployments = tmp_path / "deployments.csv"
    deployments.write_text("deploymentID,latitude,longitude,cameraModel\ncamA,-2.33,34.83,Reconyx HC500\n")
    _out, written, warnings = _write(season, tmp_path, taxa=taxa_csv, deployments=str(deployments),
                                    utc_offset="+03:00")
    assert warnings == []  # vehicle needs no taxon
    report = validate_package(Path(written["camtrap-dp"]), tmp_path / "validate")
    assert report.valid, error_lines(report)
    rows = {task.name: task.stats["rows"] for task in report.tasks}
    assert rows == {"deployments": 2, "media": 6, "observations": 5}

    package = Path(written["camtrap-dp"])
    deps = pd.read_csv(package / "deployments.csv", dtype=str, keep_default_na=False).set_index("deploymentID")
    assert (deps.loc["camA", "latitude"], deps.loc["camA", "cameraModel"]) == ("-2.33", "Reconyx HC500")
    assert deps.loc["camA", "deploymentComments"] == ""  # real coordinates: no placeholder comment
    assert deps.loc["camB", "latitude"] == "0.0" and "placeholder" in deps.loc["camB", "deploymentComments"]
    assert deps.loc["camA", "deploymentStart"] == "2021-06-01T22:15:00+03:00"
    assert (deps.loc["camA", "timestampIssues"], deps.loc["camB", "timestampIssues"]) == ("false", "true")

    media = pd.read_csv(package / "media.csv", dtype=str, keep_default_na=False).set_index("mediaID")
    assert sorted(media.index) == sorted(name for _, name, *_ in IMAGES)  # every image, failed ones included
    assert "not classified" in media.loc["camA/3.jpg", "mediaComments"]
    assert "modification time" in media.loc["camB/1.jpg", "mediaComments"]

    obs = pd.read_csv(package / "observations.csv", dtype=str, keep_default_na=False).set_index("observationID")
    zebra, lion = obs.loc["camA/1.jpg:zebra"], obs.loc["camA/1.jpg:lionmale"]
    assert (zebra["eventID"], zebra["eventStart"], zebra["eventEnd"]) == (
        "camA/1.jpg", "2021-06-01T22:15:00+03:00", "2021-06-01T22:15:02+03:00")
    assert (zebra["observationLevel"], zebra["observationType"], zebra["scientificName"]) == ("event", "animal",
                                                                                              "Equus quagga")
    assert (lion["scientificName"], lion["sex"], float(lion["classificationProbability"])) == ("Panthera leo",
                                                                                              "male", 0.6)
    assert zebra["classificationMethod"] == "machine" and "cpu_tiny abababababab" in zebra["classifiedBy"]
    assert obs.loc["camA/5.jpg:empty", "observationType"] == "blank"
    assert obs.loc["camA/5.jpg:empty", "scientificName"] == ""
    assert obs.loc["camB/1.jpg:human", "observationType"] == "human"
    assert obs.loc["camB/7.jpg:unclassified", "observationType"] == "unclassified"
    assert "empty file" in obs.loc["camB/7.jpg:unclassified", "observationComments"]

    descriptor = json.loads((package / "datapackage.json").read_text())
    assert {t["scientificName"] for t in descriptor["taxonomic"]} == {"Equus quagga", "Panthera leo"}
    assert descriptor["temporal"] == {"start": "2021-06-01", "end": descriptor["temporal"]["end"]}


def test_the_validator_can_fail(season, tmp_path):
    """The offline validation is real: the standard's own example passes, a broken package does not."""
    shared_example = Path(__file__).resolve().parents[2] / "shared/reference/camtrap-dp-1.0.2/example"
    assert validate_package(shared_example, tmp_path / "example").valid
    _, written, _ = _write(season, tmp_path)
    observations = Path(written["camtrap-dp"]) / "observations.csv"
    observations.write_text(observations.read_text().replace(",event,animal,", ",event,animals,", 1))
    report = validate_package(Path(written["camtrap-dp"]), tmp_path / "broken")
    assert not report.valid and any("animals" in line for line in error_lines(report))


def test_megadetector_json_follows_the_published_rules(season, tmp_path, taxa_csv):
    _, written, _ = _write(season, tmp_path, taxa=taxa_csv)
    doc = json.loads(Path(written["megadetector"]).read_text())
    info = doc["info"]
    assert isinstance(info["format_version"], str) and float(info["format_version"]) >= 1.5
    for key in ("detection_categories", "classification_categories"):
        cats = doc[key]
        assert all(k.isdigit() and isinstance(v, str) and v.strip() for k, v in cats.items()), key
    assert doc["detection_categories"] == {"1": "animal", "2": "person", "3": "vehicle"}
    assert doc["classification_categories"] == {str(i): c for i, c in enumerate(CLASSES)}
    assert set(doc["classification_category_descriptions"]) == set(doc["classification_categories"])
    images = {im["file"]: im for im in doc["images"]}
    assert sorted(images) == sorted(name for _, name, *_ in IMAGES)  # every image once
    for name, image in images.items():
        if image.get("failure") is not None:
            assert isinstance(image["failure"], str) and image["detections"] is None, name
            continue
        (det,) = image["detections"]
        assert det["category"] in doc["detection_categories"] and 0.0 <= det["conf"] <= 1.0
        x, y, w, h = det["bbox"]
        assert 0 <= x and 0 <= y and 0 < w and 0 < h and x + w <= 1 and y + h <= 1
        confs = [c for _, c in det["classifications"]]
        assert confs == sorted(confs, reverse=True) and all(0 <= c <= 1 for c in confs)
        assert all(cid in doc["classification_categories"] for cid, _ in det["classifications"])
        assert doc["classification_categories"][det["classifications"][0][0]] != "empty"
    assert "truncated" in images["camA/3.jpg"]["failure"] and "empty file" in images["camB/7.jpg"]["failure"]
    zebra = images["camA/1.jpg"]["detections"][0]
    assert zebra["category"] == "1" and zebra["conf"] == pytest.approx(0.98)  # 1 - P(empty) of the sequence
    assert images["camA/2.jpg"]["detections"] == images["camA/1.jpg"]["detections"]  # the sequence's evidence
    assert images["camA/5.jpg"]["detections"][0]["conf"] == pytest.approx(0.05)
    assert images["camB/1.jpg"]["detections"][0]["category"] == "2"  # a person


def test_packaged_taxa_cover_the_competition_and_bad_settings_are_refused(tmp_path):
    taxa, warnings = load_taxa(COMPETITION_CLASSES)
    assert warnings == [] and len(taxa) == 54
    assert taxa.loc["empty", "observationType"] == "blank"
    assert taxa.loc["lionfemale", ["scientificName", "sex"]].tolist() == ["Panthera leo", "female"]
    assert (taxa["observationType"] == "animal").sum() == 53 and (taxa["scientificName"] != "").sum() == 53
    own, warnings = load_taxa(["deer", "vehicle", "blank"], None)
    assert warnings == [("1 classes have no taxon in no taxa file (the classes are not the competition's) and keep "
                        "their own name as scientificName: ['deer'] (pass --taxa FILE)")]
    assert own["observationType"].tolist() == ["animal", "vehicle", "blank"]
    bad = tmp_path / "bad.csv"
    bad.write_text("class,scientificName,observationType\ndeer,Odocoileus virginianus,mammal\n")
    with pytest.raises(InputError, match=r"bad.csv:2: column 'observationType': 'mammal'"):
        load_taxa(["deer"], str(bad))
    with pytest.raises(InputError, match="threshold"):
        ExportSettings(threshold=1.5)
