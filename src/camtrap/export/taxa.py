"""From a classifier's class names to taxa: what Camtrap DP (and GBIF behind it) needs to know.

A class name like ``gazellethomsons`` means nothing to a biodiversity portal; ``Eudorcas thomsonii``
does. The mapping is a CSV with one row per class::

    class,scientificName,taxonRank,vernacularName,observationType,sex

``scientificName`` is the finest taxon the class pins down (a genus for ``genet``, an order for
``bat``), with ``taxonRank`` saying which. ``observationType`` is Camtrap DP's: ``animal``, ``human``,
``vehicle``, ``blank`` or ``unknown``; ``sex`` is filled where the class encodes it (``lionmale``).
Only ``class`` and ``scientificName`` are required; the rest default as :func:`guess_observation_type`
says. The competition's 54 classes ship with the package (:data:`SNAPSHOT_SERENGETI_TAXA`) and are
used when every class is one of them; for other datasets a user passes their own file (a class name
that coincides, like ``baboon``, may be another species elsewhere). A class without a taxon keeps its
own name, with a warning, so that nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

import pandas as pd

from camtrap.data.classes import COMPETITION_CLASSES
from camtrap.data.contract import read_text_csv
from camtrap.errors import InputError

CLASS = "class"
SCIENTIFIC_NAME = "scientificName"
TAXON_RANK = "taxonRank"
VERNACULAR_NAME = "vernacularName"
OBSERVATION_TYPE = "observationType"
SEX = "sex"
TAXA_COLUMNS = [CLASS, SCIENTIFIC_NAME, TAXON_RANK, VERNACULAR_NAME, OBSERVATION_TYPE, SEX]
OBSERVATION_TYPES = ("animal", "human", "vehicle", "blank", "unknown")
TAXON_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species", "subspecies")
SEXES = ("female", "male")
#: The competition's 54 classes (packaged with camtrap).
SNAPSHOT_SERENGETI_TAXA = "snapshot_serengeti_taxa.csv"

_BLANK_NAMES = {"empty", "blank", "none", "nothing"}
_HUMAN_NAMES = {"human", "humans", "person", "people", "hunter", "researcher"}
_VEHICLE_NAMES = {"vehicle", "vehicles", "car", "truck", "motorcycle", "bicycle"}


def guess_observation_type(class_name: str) -> str:
    """Camtrap DP's observationType from a class name alone: blank, human, vehicle, else animal."""
    name = class_name.strip().lower()
    if name in _BLANK_NAMES:
        return "blank"
    if name in _HUMAN_NAMES:
        return "human"
    if name in _VEHICLE_NAMES:
        return "vehicle"
    return "animal"


def _read(source: str) -> pd.DataFrame:
    """A taxa CSV, each row indexed by its line (:func:`camtrap.data.contract.read_text_csv`)."""
    frame, _ = read_text_csv(source, strict=True)
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in (CLASS, SCIENTIFIC_NAME) if c not in frame.columns]
    if missing:
        raise InputError(f"{source}: missing column(s) {missing}; a taxa file has "
                         f"{','.join(TAXA_COLUMNS)} (only the first two are required)")
    for column in TAXA_COLUMNS:
        frame[column] = frame[column].str.strip() if column in frame.columns else ""
    for column, allowed in ((OBSERVATION_TYPE, OBSERVATION_TYPES), (TAXON_RANK, TAXON_RANKS), (SEX, SEXES)):
        bad = frame[(frame[column] != "") & ~frame[column].isin(allowed)]
        if len(bad):
            line = int(bad.index[0])
            raise InputError(f"{source}:{line}: column '{column}': {bad[column].iloc[0]!r} is not one of "
                             f"{list(allowed)}")
    duplicated = frame[frame[CLASS].duplicated()]
    if len(duplicated):
        raise InputError(f"{source}:{int(duplicated.index[0])}: class '{duplicated[CLASS].iloc[0]}' listed twice")
    return frame[TAXA_COLUMNS]


def load_taxa(classes: Sequence[str], path: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """(one taxa row per class, indexed by class; warnings).

    ``path`` None: the packaged list when every class is one of the competition's, else no mapping.

    A class the file does not list gets its own name as ``scientificName`` (rank unknown) and a
    warning; an observationType left empty is guessed from the class name.
    """
    if path is not None:
        taxa, where = _read(str(path)), str(path)
    elif set(classes) <= set(COMPETITION_CLASSES):
        taxa = _read(str(resources.files("camtrap.export").joinpath(SNAPSHOT_SERENGETI_TAXA)))
        where = "the packaged Snapshot Serengeti list"
    else:  # another dataset's names: a coinciding name ("baboon") may be another species there
        taxa, where = pd.DataFrame(columns=TAXA_COLUMNS), "no taxa file (the classes are not the competition's)"
    taxa = taxa.set_index(CLASS)
    # Blank, human and vehicle classes need no taxon; an animal class without one keeps its own name.
    unmapped = [c for c in classes if c not in taxa.index and guess_observation_type(c) == "animal"]
    warnings = []
    if unmapped:
        warnings.append(f"{len(unmapped)} classes have no taxon in {where} and keep their own name as "
                        f"scientificName: {unmapped[:8]}{' ...' if len(unmapped) > 8 else ''} (pass --taxa FILE)")
    rows = []
    for name in classes:
        row = taxa.loc[name].to_dict() if name in taxa.index else {SCIENTIFIC_NAME: name}
        row = {c: row.get(c, "") for c in TAXA_COLUMNS[1:]}
        row[OBSERVATION_TYPE] = row[OBSERVATION_TYPE] or guess_observation_type(name)
        if row[OBSERVATION_TYPE] == "animal" and not row[SCIENTIFIC_NAME]:
            row[SCIENTIFIC_NAME] = name
        rows.append({CLASS: name, **row})
    return pd.DataFrame(rows, columns=TAXA_COLUMNS).set_index(CLASS), warnings
