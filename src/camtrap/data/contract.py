"""The data contract: read and validate the competition's metadata and labels CSVs.

Layout (Snapshot Serengeti / Hakuna Ma-data):

* metadata CSV: ``seq_id, file_name[, datetime][, camera]``; ``file_name`` is relative to an images
  directory; ``camera`` (a deployment) defaults to the folder the file sits in. Other columns are ignored.
* labels CSV: ``seq_id`` then one 0/1 column per class; the caller says which class list it expects.

Two kinds of problems, handled differently on purpose:

* *File-level* problems (unreadable or empty file, a missing or unknown column) make the file unusable;
  they raise :class:`ContractError` naming the file and column.
* *Row-level* problems (a ``file_name`` that escapes the images directory, a duplicate row, a label of
  ``2`` or ``yes``) reject that row only. The row is recorded as a :class:`RowIssue` naming the file,
  line and column, so one bad row never takes a job down and is never silently dropped. ``strict=True``
  turns any row-level problem into a :class:`ContractError` instead.

Line numbers are those a text editor shows: the header is line 1, the first data row line 2.
"""

from __future__ import annotations

import csv
import io
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

from camtrap.data import storage
from camtrap.data.classes import COMPETITION_CLASSES, DATETIME, FILE_NAME, SEQ_ID, classes_from_header
from camtrap.data.sequences import CAMERA, camera_of
from camtrap.errors import InputError

#: Column holding the metadata file a row came from, and its line there.
SOURCE = "source"
LINE = "line"

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_MAX_ISSUES_IN_MESSAGE = 20


@dataclass(frozen=True)
class RowIssue:
    """One rejected or suspicious row: where it is and why."""

    file: str
    line: int | None
    column: str | None
    reason: str
    seq_id: str | None = None
    file_name: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        col = f" column '{self.column}':" if self.column else ""
        return f"{where}:{col} {self.reason}"

    def as_dict(self) -> dict:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "seq_id": self.seq_id,
            "file_name": self.file_name,
            "reason": self.reason,
        }


class ContractError(InputError):
    """A CSV breaks the contract; the message lists every problem found (file, line, column, reason)."""

    def __init__(self, issues: Sequence[RowIssue] | str):
        if isinstance(issues, str):
            self.issues: list[RowIssue] = []
            super().__init__(issues)
            return
        self.issues = list(issues)
        shown = [f"  {i}" for i in self.issues[:_MAX_ISSUES_IN_MESSAGE]]
        more = len(self.issues) - len(shown)
        if more > 0:
            shown.append(f"  ... and {more} more")
        super().__init__(f"{len(self.issues)} contract violation(s):\n" + "\n".join(shown))


def issues_frame(issues: Iterable[RowIssue]) -> pd.DataFrame:
    """Issues as a table (for ``rejected_rows.csv`` files and reports)."""
    cols = ["file", "line", "column", "seq_id", "file_name", "reason"]
    return pd.DataFrame([i.as_dict() for i in issues], columns=cols)


@dataclass
class Metadata:
    """Valid metadata rows plus the rows that were rejected.

    ``frame`` has ``seq_id, file_name, [datetime], source, line`` with ``file_name`` normalised (POSIX
    separators, no ``./``). ``rejected`` holds one issue per rejected input row.
    """

    frame: pd.DataFrame
    rejected: list[RowIssue] = field(default_factory=list)
    sources: tuple[str, ...] = ()

    @property
    def num_input_rows(self) -> int:
        return len(self.frame) + len(self.rejected)


@dataclass
class Labels:
    """Valid label rows (``seq_id`` then one uint8 column per class) plus rejected rows."""

    frame: pd.DataFrame
    classes: tuple[str, ...]
    rejected: list[RowIssue] = field(default_factory=list)
    source: str = ""
    lines: dict[str, int] = field(default_factory=dict)

    def matrix(self, seq_ids: Sequence[str]):
        """Label matrix (float32, rows in ``seq_ids`` order); KeyError for an unknown seq_id."""
        indexed = self.frame.set_index(SEQ_ID)
        return indexed.loc[list(seq_ids), list(self.classes)].to_numpy(dtype="float32")


def read_csv_file(path: str) -> pd.DataFrame:
    """Read a CSV this package wrote (numbers parsed); ``ContractError`` naming the file if missing, empty
    or unreadable. A user's table goes through :func:`read_text_csv`, which checks every row."""
    try:
        return pd.read_csv(path, index_col=False)
    except FileNotFoundError:
        raise ContractError(f"{path}: file not found") from None
    except pd.errors.EmptyDataError:
        raise ContractError(f"{path}: file is empty (no header)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ContractError(f"{path}: not a readable CSV ({e})") from None


def _header(path: str, record: list[str]) -> list[str]:
    """Column names of a header row: stripped, trailing empty ones (a spreadsheet's trailing commas) dropped,
    others unnamed by position; a name listed twice is a file-level error."""
    names = [c.strip() for c in record]
    while names and not names[-1]:
        names.pop()
    names = [n or f"Unnamed: {i}" for i, n in enumerate(names)]
    seen = set()
    for n in names:
        if n in seen:
            raise ContractError(f"{path}: column '{n}' appears more than once in the header")
        seen.add(n)
    return names


def read_text_csv(path: str, strict: bool = False) -> tuple[pd.DataFrame, list[RowIssue]]:
    """A user's CSV (path or URI) exactly as written: every cell a string, each row indexed by its line.

    Pandas would take the leading fields of a row with one field too many as an index (an unquoted comma
    in a file name shifts ``seq_id`` and ``file_name`` silently). Here each row must have the header's
    number of fields: trailing empty fields (spreadsheet exports end every row with commas) are dropped,
    and any other row with too many or too few fields is returned as a :class:`RowIssue` with its line,
    never guessed at (``strict``: a :class:`ContractError` listing them, for a table that must be whole).
    Blank lines are skipped. File-level problems raise :class:`ContractError`.
    """
    try:
        raw = storage.read_bytes(path)
    except FileNotFoundError:
        raise ContractError(f"{path}: file not found") from None
    except (IsADirectoryError, PermissionError) as e:
        raise ContractError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ContractError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    bad: list[RowIssue] = []
    line = 0
    try:
        for record in reader:
            start, line = line + 1, reader.line_num
            if not any(c.strip() for c in record):
                continue  # a blank line, or a spreadsheet's row of empty cells
            if header is None:
                header = _header(path, record)
                continue
            width = len(header)
            while len(record) > width and not record[-1].strip():
                record = record[:-1]  # a trailing comma (spreadsheet export) is no field
            if len(record) != width:
                bad.append(RowIssue(path, start, None, f"has {len(record)} fields where the header has {width} "
                                    "(an unquoted comma in a value, or a missing field); row not used"))
                continue
            rows.append(record)
            lines.append(start)
    except csv.Error as e:
        raise ContractError(f"{path}:{reader.line_num}: not a readable CSV ({e})") from None
    if header is None:
        raise ContractError(f"{path}: file is empty (no header)")
    if strict and bad:
        raise ContractError(bad)
    frame = pd.DataFrame.from_records(rows, columns=header) if rows else pd.DataFrame(columns=header, dtype=str)
    frame.index = pd.Index(lines, name=LINE, dtype="int64")
    return frame, bad


def normalize_file_name(file_name: str) -> str:
    """Check that ``file_name`` stays inside the images directory; return it normalised.

    Raises ``ValueError`` with the reason. Absolute paths, drive letters and URIs are refused because
    they would read outside the dataset; so is any ``..`` that climbs above the images directory.
    """
    name = file_name.strip()
    if not name:
        raise ValueError("file_name is empty")
    if "\x00" in name:
        raise ValueError("file_name contains a NUL byte")
    if "::" in name:
        raise ValueError(f"file_name '{name}' contains '::' (fsspec would read it as a chain of URLs)")
    if name.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(name) or "://" in name:
        raise ValueError(f"file_name '{name}' is absolute; it must be relative to the images directory")
    norm = posixpath.normpath(name.replace("\\", "/"))
    if norm == ".." or norm.startswith("../"):
        raise ValueError(f"file_name '{name}' escapes the images directory")
    if norm in (".", ""):
        raise ValueError(f"file_name '{name}' names the images directory itself")
    return norm


def read_metadata(paths: str | Sequence[str], strict: bool = False) -> Metadata:
    """Read one or more metadata CSVs into one validated table.

    A ``file_name`` listed twice (in one file or across files) is kept once: the later rows are
    rejected with the line of the first. Raises :class:`ContractError` for file-level problems, and for
    any row-level problem when ``strict``.
    """
    if isinstance(paths, str):
        paths = [paths]
    if not paths:
        raise ContractError("no metadata file given")
    frames: list[pd.DataFrame] = []
    rejected: list[RowIssue] = []
    first_seen: dict[str, tuple[str, int]] = {}
    for path in paths:
        path = str(path)
        df, bad_rows = read_text_csv(path)
        rejected.extend(bad_rows)
        missing = [c for c in (SEQ_ID, FILE_NAME) if c not in df.columns]
        if missing:
            raise ContractError(
                f"{path}: missing required column(s) {missing}; expected '{SEQ_ID},{FILE_NAME}[,{DATETIME}]', "
                f"found {list(df.columns)}"
            )
        if df.empty and not bad_rows:
            raise ContractError(f"{path}: no data rows (header only)")
        keep_cols = [SEQ_ID, FILE_NAME] + [c for c in (DATETIME, CAMERA) if c in df.columns]
        rows = []
        for line, seq_id, file_name, *rest in df[keep_cols].itertuples(index=True, name=None):
            seq_id = seq_id.strip()
            issue = None
            if not seq_id:
                issue = RowIssue(path, line, SEQ_ID, "seq_id is empty", None, file_name)
            else:
                try:
                    norm = normalize_file_name(file_name)
                except ValueError as e:
                    issue = RowIssue(path, line, FILE_NAME, str(e), seq_id, file_name)
                else:
                    if norm in first_seen:
                        f0, l0 = first_seen[norm]
                        issue = RowIssue(
                            path, line, FILE_NAME, f"duplicate file_name '{norm}' (first listed at {f0}:{l0})",
                            seq_id, file_name,
                        )
                    else:
                        first_seen[norm] = (path, line)
            if issue is not None:
                rejected.append(issue)
                continue
            rows.append((seq_id, norm, *rest, path, line))
        frames.append(pd.DataFrame(rows, columns=[*keep_cols, SOURCE, LINE]))
    if strict and rejected:
        raise ContractError(rejected)
    frame = pd.concat(frames, ignore_index=True)
    for column in (DATETIME, CAMERA):
        frame[column] = frame[column].fillna("").str.strip() if column in frame.columns else ""
    # No camera given: the folder a file sits in (a deployment, for the formats that need one).
    frame[CAMERA] = frame[CAMERA].where(frame[CAMERA] != "", frame[FILE_NAME].map(camera_of))
    frame[LINE] = frame[LINE].astype("int64")
    return Metadata(frame=frame[[SEQ_ID, FILE_NAME, DATETIME, CAMERA, SOURCE, LINE]], rejected=rejected,
                    sources=tuple(paths))


#: What a caller asks of a labels header: the exact class list, ``None`` (the header's own) or ``"auto"``.
ClassSetting = Sequence[str] | Literal["auto"] | None

_TRUE = {"1", "1.0"}
_FALSE = {"0", "0.0"}


def read_labels(path: str, classes: ClassSetting = COMPETITION_CLASSES, strict: bool = False) -> Labels:
    """Read and validate a labels CSV.

    ``classes``: the expected class columns (any order in the file; the result uses this order);
    ``None`` takes the class list from the file's header, in its order; ``"auto"`` does too, except that
    a header naming exactly the competition's 54 classes gets the competition's order (so a reordered
    competition file still trains the same output layout). A missing or unknown class column is a
    file-level error. Duplicate seq_ids and cells other than 0/1 reject the row.
    """
    path = str(path)
    df, rejected = read_text_csv(path)
    try:
        header_classes = classes_from_header(list(df.columns))
    except ValueError as e:
        raise ContractError(f"{path}: {e}") from None
    if classes is None:
        classes = header_classes
    elif isinstance(classes, str):
        if classes != "auto":
            raise ValueError(f"classes must be a list of names, None or 'auto', got {classes!r}")
        classes = COMPETITION_CLASSES if set(header_classes) == set(COMPETITION_CLASSES) else header_classes
    else:
        classes = tuple(classes)
        missing = [c for c in classes if c not in header_classes]
        unknown = [c for c in header_classes if c not in classes]
        problems = [f"{what} class column(s) {_shorten(names)}" for what, names in
                    (("missing", missing), ("unknown", unknown)) if names]
        if problems:
            expected = (f"expected the competition's {len(classes)} classes because the recipe says `classes: "
                        f"competition`; to train on this file's own {len(header_classes)} classes, drop that line "
                        "or pass --set classes=auto") if classes == COMPETITION_CLASSES else (
                        f"expected the {len(classes)} classes of the training labels")
            raise ContractError(f"{path}: " + "; ".join(problems) + f" ({expected})")
    if df.empty and not rejected:
        raise ContractError(f"{path}: no data rows (header only)")

    values = df[list(classes)].apply(lambda s: s.str.strip())
    is_one = values.isin(_TRUE)
    is_zero = values.isin(_FALSE)
    bad_cell = ~(is_one | is_zero)
    seq_ids = df[SEQ_ID].str.strip()
    keep = pd.Series(True, index=df.index)
    first_line: dict[str, int] = {}
    bad_rows = bad_cell.any(axis=1).to_numpy()
    for i, (line, seq_id) in enumerate(seq_ids.items()):
        if not seq_id:
            rejected.append(RowIssue(path, line, SEQ_ID, "seq_id is empty"))
            keep.iloc[i] = False
            continue
        if bad_rows[i]:
            col = bad_cell.columns[bad_cell.iloc[i].to_numpy()][0]
            rejected.append(
                RowIssue(path, line, col, f"label value {values.iloc[i][col]!r} is not 0 or 1", seq_id)
            )
            keep.iloc[i] = False
            continue
        if seq_id in first_line:
            rejected.append(
                RowIssue(path, line, SEQ_ID, f"duplicate seq_id '{seq_id}' (first at line {first_line[seq_id]})", seq_id)
            )
            keep.iloc[i] = False
            continue
        first_line[seq_id] = line
    if strict and rejected:
        raise ContractError(rejected)
    frame = is_one[keep.to_numpy()].astype("uint8")
    frame.insert(0, SEQ_ID, seq_ids[keep.to_numpy()].to_numpy())
    return Labels(
        frame=frame.reset_index(drop=True), classes=tuple(classes), rejected=rejected, source=path, lines=first_line
    )


def _shorten(names: Sequence[str], limit: int = 8) -> str:
    """A list of names for a one-line message: the first ``limit`` and how many more."""
    return repr(list(names)) if len(names) <= limit else f"{list(names[:limit])!r}"[:-1] + f", ... {len(names) - limit} more]"


def check_coverage(metadata: Metadata, labels: Labels) -> list[RowIssue]:
    """Sequences that are labelled but have no image, and images whose sequence has no label.

    Neither can be trained on, so both are reported (one issue per labels row / metadata row) for the
    caller to record; the caller decides whether to go on without them.
    """
    meta_seqs = set(metadata.frame[SEQ_ID])
    label_seqs = set(labels.frame[SEQ_ID])
    issues: list[RowIssue] = []
    for seq_id in labels.frame[SEQ_ID]:
        if seq_id not in meta_seqs:
            line = labels.lines.get(seq_id)
            issues.append(RowIssue(labels.source, line, SEQ_ID, "labelled sequence has no image in the metadata", seq_id))
    unlabelled = ~metadata.frame[SEQ_ID].isin(label_seqs)
    for seq_id, file_name, source, line in metadata.frame.loc[unlabelled, [SEQ_ID, FILE_NAME, SOURCE, LINE]].itertuples(
        index=False, name=None
    ):
        issues.append(RowIssue(source, int(line), SEQ_ID, "image of a sequence with no label", seq_id, file_name))
    return issues
