"""The ``camtrap-dp`` format: a Camtrap DP 1.0.2 package (TDWG's exchange standard; GBIF, Agouti).

``OUT/camtrap-dp/`` holds ``datapackage.json``, ``deployments.csv``, ``media.csv`` and
``observations.csv``, at event level: an event is a sequence, with its real start and end from the
frames' capture times.

* **deployments**: one per camera folder (or metadata ``camera``), from its first to its last capture.
  A classifier cannot know where a camera stood, so latitude/longitude are the placeholder 0, 0 with a
  comment saying so, unless a deployments CSV (``--deployments``, by ``deploymentID``) gives them and
  any other deployments field.
* **media**: one per image, failed ones included (their ``mediaComments`` say why). ``filePath`` is
  relative to the images folder. An image with no capture time takes its file's modification time,
  says so in ``mediaComments``, and marks its deployment ``timestampIssues``.
* **observations**: one per class a sequence is reported as (:func:`~camtrap.export.season.sequence_labels`),
  ``classificationMethod`` machine, ``classifiedBy`` the model(s) with their content hash,
  ``classificationProbability`` and ``classificationTimestamp``; taxa from :mod:`camtrap.export.taxa`.
  A sequence with no usable image is one ``unclassified`` observation with the reason.

EXIF times carry no zone: ``--utc-offset`` gives the cameras' clock offset (default +00:00, a
placeholder the package's description states).
"""

from __future__ import annotations

import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor

import pandas as pd

import camtrap
from camtrap.data import storage
from camtrap.data.classes import FILE_NAME, SEQ_ID
from camtrap.data.contract import read_text_csv
from camtrap.data.frames import ERROR
from camtrap.data.sequences import CAMERA
from camtrap.errors import InputError
from camtrap.export.season import ExportSettings, ScoredSeason, parse_utc_offset, sequence_labels
from camtrap.export.taxa import OBSERVATION_TYPE, SCIENTIFIC_NAME, SEX, TAXON_RANK, VERNACULAR_NAME

PACKAGE_DIR = "camtrap-dp"
VERSION = "1.0.2"
_BASE = f"https://raw.githubusercontent.com/tdwg/camtrap-dp/{VERSION}"
PROFILE_URL = f"{_BASE}/camtrap-dp-profile.json"
TABLES = ("deployments", "media", "observations")

DEPLOYMENT_FIELDS = [
    "deploymentID", "locationID", "locationName", "latitude", "longitude", "coordinateUncertainty",
    "deploymentStart", "deploymentEnd", "setupBy", "cameraID", "cameraModel", "cameraDelay", "cameraHeight",
    "cameraDepth", "cameraTilt", "cameraHeading", "detectionDistance", "timestampIssues", "baitUse",
    "featureType", "habitat", "deploymentGroups", "deploymentTags", "deploymentComments",
]  # fmt: skip
MEDIA_FIELDS = [
    "mediaID", "deploymentID", "captureMethod", "timestamp", "filePath", "filePublic", "fileName",
    "fileMediatype", "exifData", "favorite", "mediaComments",
]  # fmt: skip
OBSERVATION_FIELDS = [
    "observationID", "deploymentID", "mediaID", "eventID", "eventStart", "eventEnd", "observationLevel",
    "observationType", "cameraSetupType", "scientificName", "count", "lifeStage", "sex", "behavior",
    "individualID", "individualPositionRadius", "individualPositionAngle", "individualSpeed", "bboxX", "bboxY",
    "bboxWidth", "bboxHeight", "classificationMethod", "classifiedBy", "classificationTimestamp",
    "classificationProbability", "observationTags", "observationComments",
]  # fmt: skip
PLACEHOLDER_COMMENT = ("coordinates unknown to camtrap: latitude/longitude 0, 0 are placeholders "
                       "(give them with predict.py --deployments)")
_MEDIATYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


def _table(frame: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """The standard's columns in its order; a field camtrap does not fill is an empty cell."""
    return frame.reindex(columns=fields).astype(object).fillna("")


def _iso(value: dt.datetime) -> str:
    """Camtrap DP's ``%Y-%m-%dT%H:%M:%S%z`` with the offset written as ``+HH:MM``."""
    return value.isoformat(timespec="seconds")


def _file_times(images_dir: str, names: list[str], zone: dt.timezone) -> dict[str, dt.datetime]:
    """Modification times of files (in ``zone``), for images with no capture time; one stat per file,
    in threads (on object storage each is a request)."""

    def one(name: str) -> dt.datetime | None:
        fs, inner = storage.get_fs(storage.join(images_dir, name))
        try:
            info = fs.info(inner)
        except (OSError, ValueError):
            return None
        stamp = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
        if isinstance(stamp, (int, float)):
            return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).astimezone(zone)
        if isinstance(stamp, dt.datetime):
            return (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)).astimezone(zone)
        return None

    if names:
        print(f"predict: camtrap-dp: {len(names)} images have no capture time; their files' modification times "
              "stand in (mediaComments says so)", flush=True)
    with ThreadPoolExecutor(max_workers=32) as pool:
        found = dict(zip(names, pool.map(one, names)))
    return {name: when for name, when in found.items() if when is not None}


def media_table(season: ScoredSeason, zone: dt.timezone) -> pd.DataFrame:
    """One media row per image whose file name is valid (the metadata's rejected rows have none)."""
    valid = (season.images[CAMERA] != "").to_numpy()
    images, times = season.images[valid].copy(), season.times[valid]
    untimed = list(images.loc[times.isna().to_numpy(), FILE_NAME])
    fallback = _file_times(season.images_dir, untimed, zone)
    stamps, comments = [], []
    for name, when, error in zip(images[FILE_NAME], times, images[ERROR]):
        notes = []
        if pd.isna(when):
            stamp = fallback.get(name)
            notes.append("timestamp: the file's modification time (no capture time in its metadata)" if stamp
                         else "timestamp unknown: placeholder 1970-01-01 (no capture time, file not readable)")
            stamp = stamp or dt.datetime(1970, 1, 1, tzinfo=zone)
        else:
            stamp = when.to_pydatetime().replace(tzinfo=zone)
        if error:
            notes.append(f"not classified: {error}")
        stamps.append(stamp)
        comments.append("; ".join(notes))
    images["_stamp"] = stamps
    images["_timestamp_issue"] = times.isna().to_numpy()
    images["mediaComments"] = comments
    return images


def _deployments(media: pd.DataFrame, settings: ExportSettings) -> pd.DataFrame:
    grouped = media.groupby("deploymentID", sort=True)
    frame = pd.DataFrame({
        "deploymentID": list(grouped.groups),
        "locationName": list(grouped.groups),
        "latitude": 0.0,
        "longitude": 0.0,
        "deploymentStart": grouped["_stamp"].min().map(_iso).to_numpy(),
        "deploymentEnd": grouped["_stamp"].max().map(_iso).to_numpy(),
        "timestampIssues": grouped["_timestamp_issue"].any().map(lambda b: "true" if b else "false").to_numpy(),
        "deploymentComments": PLACEHOLDER_COMMENT,
    })
    if settings.deployments:
        frame = _merge_user_deployments(frame, settings.deployments)
    return _table(frame, DEPLOYMENT_FIELDS)


def _merge_user_deployments(frame: pd.DataFrame, path: str) -> pd.DataFrame:
    """Overlay a user's deployments CSV (by deploymentID) on the inferred rows."""
    user, _ = read_text_csv(path, strict=True)
    if "deploymentID" not in user.columns:
        raise InputError(f"{path}: no 'deploymentID' column; a deployments file has deploymentID (the camera "
                         f"folder) and any Camtrap DP deployments field, e.g. latitude,longitude")
    unknown = [c for c in user.columns if c not in DEPLOYMENT_FIELDS]
    if unknown:
        raise InputError(f"{path}: column(s) {unknown} are not Camtrap DP deployments fields")
    extra = sorted(set(user["deploymentID"]) - set(frame["deploymentID"]))
    if extra:
        print(f"predict: {path}: deployments {extra[:5]} have no image and are left out")
    user = user.set_index("deploymentID")
    frame = frame.set_index("deploymentID")
    for column in user.columns:
        given = user[column].reindex(frame.index).fillna("")
        if column not in frame.columns:
            frame[column] = ""
        frame[column] = frame[column].astype(object).where(given == "", given)
    has_coords = (user.reindex(frame.index).get("latitude", pd.Series("", index=frame.index)).fillna("") != "")
    frame.loc[has_coords.to_numpy() & (frame["deploymentComments"] == PLACEHOLDER_COMMENT), "deploymentComments"] = ""
    return frame.reset_index()


def _observations(season: ScoredSeason, media: pd.DataFrame, taxa: pd.DataFrame,
                  settings: ExportSettings) -> pd.DataFrame:
    spans = media.groupby(SEQ_ID, sort=False).agg(start=("_stamp", "min"), end=("_stamp", "max"),
                                                  deploymentID=("deploymentID", "first"))
    failure = season.failure_of()
    when = _iso(season.finished)
    types = taxa[OBSERVATION_TYPE]
    rows = []
    for seq_id, probs in season.sequences[season.classes].iterrows():
        if seq_id not in spans.index:
            continue  # only rejected metadata rows: no valid file, listed in failed_images.csv
        span = spans.loc[seq_id]
        base = {"deploymentID": span["deploymentID"], "eventID": seq_id, "eventStart": _iso(span["start"]),
                "eventEnd": _iso(span["end"]), "observationLevel": "event"}
        if seq_id in failure:
            rows.append({**base, "observationID": f"{seq_id}:unclassified", "observationType": "unclassified",
                         "observationComments": f"no usable image: {failure[seq_id]}"})
            continue
        for name in sequence_labels(probs, types, settings.threshold):
            taxon = taxa.loc[name]
            kind = taxon[OBSERVATION_TYPE]
            rows.append({**base, "observationID": f"{seq_id}:{name}", "observationType": kind,
                         "scientificName": taxon[SCIENTIFIC_NAME] if kind == "animal" else "",
                         "sex": taxon[SEX], "classificationMethod": "machine", "classifiedBy": season.classifier,
                         "classificationTimestamp": when,
                         "classificationProbability": round(float(probs[name]), 6),
                         "observationTags": f"class:{name}"})
    return _table(pd.DataFrame(rows), OBSERVATION_FIELDS)


def _taxonomic(taxa: pd.DataFrame) -> list[dict]:
    """The package's ``taxonomic`` list: each distinct taxon the classes map to."""
    out, seen = [], set()
    for _, taxon in taxa[taxa[OBSERVATION_TYPE] == "animal"].iterrows():
        name = taxon[SCIENTIFIC_NAME]
        if not name or name in seen:
            continue
        seen.add(name)
        entry = {"scientificName": name}
        if taxon[TAXON_RANK]:
            entry["taxonRank"] = taxon[TAXON_RANK]
        if taxon[VERNACULAR_NAME]:
            entry["vernacularNames"] = {"eng": taxon[VERNACULAR_NAME]}
        out.append(entry)
    return out


def _spatial(deployments: pd.DataFrame) -> dict:
    lat = pd.to_numeric(deployments["latitude"])
    lon = pd.to_numeric(deployments["longitude"])
    if lat.min() == lat.max() and lon.min() == lon.max():
        return {"type": "Point", "coordinates": [float(lon.iloc[0]), float(lat.iloc[0])]}
    w, e, s, n = float(lon.min()), float(lon.max()), float(lat.min()), float(lat.max())
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def _merge(base: dict, extra: dict) -> dict:
    """``extra`` over ``base``, recursing into objects (a user's ``project`` keeps the required fields)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _descriptor(season: ScoredSeason, deployments: pd.DataFrame, media: pd.DataFrame, taxa: pd.DataFrame,
                settings: ExportSettings) -> dict:
    start, end = media["_stamp"].min(), media["_stamp"].max()
    descriptor = {
        "profile": PROFILE_URL,
        "name": "camtrap-predictions",
        "created": _iso(season.finished),
        "title": f"Machine classifications of {season.images_dir}",
        "description": (
            f"Event-level classifications by {season.classifier} (camtrap {camtrap.__version__}). Events are "
            f"sequences of frames; their times are the cameras' clocks at UTC{settings.utc_offset}"
            f"{' (a placeholder: the offset was not given)' if settings.utc_offset == '+00:00' else ''}. "
            "Deployment coordinates are placeholders unless a deployments file was given."),
        "version": "1.0",
        "contributors": [{"title": "camtrap (machine classification)", "role": "contributor"}],
        "sources": [{"title": "camtrap", "version": camtrap.__version__}],
        "project": {"title": f"Camera-trap images under {season.images_dir}", "samplingDesign": "opportunistic",
                    "captureMethod": ["activityDetection"], "individualAnimals": False,
                    "observationLevel": ["event"]},
        "spatial": _spatial(deployments),
        "temporal": {"start": start.date().isoformat(), "end": end.date().isoformat()},
        "taxonomic": _taxonomic(taxa),
        "resources": [{"name": t, "path": f"{t}.csv", "profile": "tabular-data-resource", "format": "csv",
                       "mediatype": "text/csv", "encoding": "utf-8", "schema": f"{_BASE}/{t}-table-schema.json"}
                      for t in TABLES],
    }
    if settings.package_metadata:
        try:
            extra = json.loads(storage.read_bytes(settings.package_metadata))
        except json.JSONDecodeError as e:
            raise InputError(f"{settings.package_metadata}: not valid JSON ({e})") from None
        if not isinstance(extra, dict):
            raise InputError(f"{settings.package_metadata}: expected a JSON object of datapackage.json fields")
        descriptor = _merge(descriptor, extra)
    return descriptor


def write_camtrap_dp(season: ScoredSeason, out_dir: str, settings: ExportSettings, taxa: pd.DataFrame) -> str:
    """``OUT/camtrap-dp/``; returns the folder."""
    zone = parse_utc_offset(settings.utc_offset)
    media = media_table(season, zone)
    media["deploymentID"] = media[CAMERA]
    deployments = _deployments(media, settings)
    observations = _observations(season, media, taxa, settings)
    media_rows = pd.DataFrame({
        "mediaID": media[FILE_NAME], "deploymentID": media["deploymentID"],
        "timestamp": media["_stamp"].map(_iso), "filePath": media[FILE_NAME], "filePublic": "false",
        "fileName": media[FILE_NAME].str.rpartition("/")[2],
        "fileMediatype": media[FILE_NAME].map(lambda n: _MEDIATYPES.get("." + n.rpartition(".")[2].lower(),
                                                                         "image/jpeg")),
        "mediaComments": media["mediaComments"],
    })
    media_rows = _table(media_rows, MEDIA_FIELDS)
    folder = storage.join(out_dir, PACKAGE_DIR)
    storage.makedirs(folder)
    for name, table in (("deployments", deployments), ("media", media_rows), ("observations", observations)):
        storage.write_bytes_atomic(storage.join(folder, f"{name}.csv"), table.to_csv(index=False).encode())
    descriptor = _descriptor(season, deployments, media, taxa, settings)
    storage.write_bytes_atomic(storage.join(folder, "datapackage.json"),
                               (json.dumps(descriptor, indent=2, ensure_ascii=False) + "\n").encode())
    return folder
