"""The data contract: every failure names the file, line and column; bad rows are reported, not dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from camtrap.data.classes import COMPETITION_CLASSES, classes_from_header
from camtrap.data.contract import (
    ContractError,
    check_coverage,
    normalize_file_name,
    read_labels,
    read_metadata,
)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def labels_csv(rows: list[tuple[str, dict]], classes=COMPETITION_CLASSES) -> str:
    lines = ["seq_id," + ",".join(classes)]
    for seq_id, ones in rows:
        lines.append(seq_id + "," + ",".join(str(ones.get(c, 0)) for c in classes))
    return "\n".join(lines) + "\n"


def test_competition_classes_are_the_54_columns_in_order():
    assert len(COMPETITION_CLASSES) == 54 == len(set(COMPETITION_CLASSES))
    assert COMPETITION_CLASSES[0] == "aardvark" and COMPETITION_CLASSES[15] == "empty"
    assert COMPETITION_CLASSES[-1] == "zorilla"
    assert list(COMPETITION_CLASSES) == sorted(COMPETITION_CLASSES)  # the competition's are alphabetical


def test_classes_from_header():
    assert classes_from_header(["seq_id", "cat", "dog"]) == ("cat", "dog")
    with pytest.raises(ValueError, match="start with 'seq_id'"):
        classes_from_header(["id", "cat"])
    with pytest.raises(ValueError, match="'cat' twice"):
        classes_from_header(["seq_id", "cat", "cat"])


def test_metadata_reads_valid_rows(tmp_path):
    p = write(tmp_path / "m.csv", "seq_id,file_name,datetime\nA,S1/a.JPG,2011-01-01 00:00:00\nA,./S1/b.JPG,\nB,S1/x/../c.JPG,\n")
    md = read_metadata(p)
    assert list(md.frame["file_name"]) == ["S1/a.JPG", "S1/b.JPG", "S1/c.JPG"]
    assert list(md.frame["line"]) == [2, 3, 4]
    assert md.rejected == [] and md.num_input_rows == 3


@pytest.mark.parametrize(
    "name, reason",
    [
        ("/etc/passwd", "absolute"),
        ("C:\\data\\x.jpg", "absolute"),
        ("s3://bucket/x.jpg", "absolute"),
        ("../x.jpg", "escapes"),
        ("S1/../../x.jpg", "escapes"),
        ("", "empty"),
    ],
)
def test_file_name_outside_images_dir_is_rejected(tmp_path, name, reason):
    p = write(tmp_path / "m.csv", f"seq_id,file_name\nA,ok.jpg\nB,{name}\n")
    md = read_metadata(p)
    assert list(md.frame["file_name"]) == ["ok.jpg"]
    (issue,) = md.rejected
    assert (issue.file, issue.line, issue.column) == (p, 3, "file_name")
    assert reason in issue.reason
    assert f"{p}:3: column 'file_name':" in str(issue)
    with pytest.raises(ContractError, match=f"{p}:3"):
        read_metadata(p, strict=True)


def test_duplicate_file_name_across_files_keeps_first(tmp_path):
    a = write(tmp_path / "a.csv", "seq_id,file_name\nA,x.jpg\n")
    b = write(tmp_path / "b.csv", "seq_id,file_name\nB,y.jpg\nC,./x.jpg\n")
    md = read_metadata([a, b])
    assert list(md.frame["seq_id"]) == ["A", "B"]
    (issue,) = md.rejected
    assert issue.file == b and issue.line == 3 and f"first listed at {a}:2" in issue.reason


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "file is empty"),
        ("seq_id,file_name\n", "no data rows"),
        ("seq_id,path\nA,x.jpg\n", r"missing required column\(s\) \['file_name'\]"),
        ("seq_id,file_name,file_name\nA,x,y\n", "'file_name' appears more than once"),
    ],
)
def test_metadata_file_level_errors(tmp_path, text, match):
    p = write(tmp_path / "m.csv", text)
    with pytest.raises(ContractError, match=match) as e:
        read_metadata(p)
    assert p in str(e.value)


def test_missing_metadata_file_is_named(tmp_path):
    with pytest.raises(ContractError, match="nope.csv: file not found"):
        read_metadata(str(tmp_path / "nope.csv"))


def test_labels_valid(tmp_path):
    p = write(tmp_path / "l.csv", labels_csv([("A", {"empty": 1}), ("B", {"zebra": 1, "wildebeest": 1})]))
    labels = read_labels(p)
    assert labels.classes == COMPETITION_CLASSES
    m = labels.matrix(["B", "A"])
    assert m.shape == (2, 54) and m.sum() == 3
    assert m[1, COMPETITION_CLASSES.index("empty")] == 1


def test_labels_bad_values_and_duplicates_are_rejected_with_line_and_column(tmp_path):
    text = labels_csv([("A", {"empty": 1}), ("B", {"zebra": 2}), ("C", {"lionmale": "yes"}), ("A", {"zebra": 1})])
    p = write(tmp_path / "l.csv", text)
    labels = read_labels(p)
    assert list(labels.frame["seq_id"]) == ["A"]
    by_line = {i.line: i for i in labels.rejected}
    assert by_line[3].column == "zebra" and "'2' is not 0 or 1" in by_line[3].reason
    assert by_line[4].column == "lionmale" and "'yes'" in by_line[4].reason
    assert by_line[5].column == "seq_id" and "duplicate seq_id 'A' (first at line 2)" in by_line[5].reason
    with pytest.raises(ContractError, match="3 contract violation"):
        read_labels(p, strict=True)


def test_labels_unknown_and_missing_class_columns(tmp_path):
    classes = list(COMPETITION_CLASSES)
    classes[3] = "unicorn"
    p = write(tmp_path / "l.csv", labels_csv([("A", {"empty": 1})], classes=classes))
    with pytest.raises(ContractError) as e:
        read_labels(p)
    msg = str(e.value)
    assert p in msg and "missing class column(s) ['bat']" in msg and "unknown class column(s) ['unicorn']" in msg


def test_labels_other_dataset_takes_classes_from_header(tmp_path):
    p = write(tmp_path / "l.csv", "seq_id,deer,boar,blank\nA,1,0,0\nB,0,0,1\n")
    labels = read_labels(p, classes=None)
    assert labels.classes == ("deer", "boar", "blank")
    assert labels.matrix(["A", "B"]).tolist() == [[1, 0, 0], [0, 0, 1]]


def test_labels_reordered_columns_follow_expected_order(tmp_path):
    p = write(tmp_path / "l.csv", "seq_id,b,a\nA,1,0\n")
    labels = read_labels(p, classes=("a", "b"))
    assert labels.matrix(["A"]).tolist() == [[0, 1]]


def test_coverage_reports_both_directions(tmp_path):
    m = write(tmp_path / "m.csv", "seq_id,file_name\nA,a.jpg\nZ,z.jpg\n")
    lab = write(tmp_path / "l.csv", "seq_id,x,y\nA,1,0\nB,0,1\n")
    issues = check_coverage(read_metadata(m), read_labels(lab, classes=None))
    reasons = {(i.file, i.line, i.seq_id): i.reason for i in issues}
    assert reasons[(lab, 3, "B")] == "labelled sequence has no image in the metadata"
    assert reasons[(m, 3, "Z")] == "image of a sequence with no label"
    assert len(issues) == 2


def test_normalize_file_name_keeps_inner_dotdot():
    assert normalize_file_name("S1/B04/../B05/x.JPG") == "S1/B05/x.JPG"
    assert normalize_file_name("S1\\B04\\x.JPG") == "S1/B04/x.JPG"


def test_a_row_with_an_unquoted_comma_is_rejected_with_its_line_and_shifts_nothing(tmp_path):
    """Pandas took the leading fields of such a row as an index: seq_id 'S1/a', file_name 'b.jpg'."""
    p = write(tmp_path / "m.csv", "seq_id,file_name\nSEQ1,S1/a,b.jpg\nSEQ2,S1/c.jpg\n\nSEQ3,S1/d.jpg,\nSEQ4\n")
    md = read_metadata(p)
    assert list(md.frame["seq_id"]) == ["SEQ2", "SEQ3"] and list(md.frame["file_name"]) == ["S1/c.jpg", "S1/d.jpg"]
    assert list(md.frame["line"]) == [3, 5]  # the blank line 4 is skipped, lines stay the editor's
    assert [(i.line, i.reason.split(" (")[0]) for i in md.rejected] == [
        (2, "has 3 fields where the header has 2"), (6, "has 1 fields where the header has 2")]
    assert str(md.rejected[0]).startswith(f"{p}:2: has 3 fields")


def test_spreadsheet_trailing_commas_are_tolerated_on_every_row(tmp_path):
    p = write(tmp_path / "m.csv", "seq_id,file_name,\nA,x.jpg,\nB,y.jpg,,\n,,\n")
    md = read_metadata(p)
    assert list(md.frame["file_name"]) == ["x.jpg", "y.jpg"] and md.rejected == []
    labels = write(tmp_path / "l.csv", labels_csv([("A", {"zebra": 1})]).replace("\n", ",\n"))
    assert list(read_labels(labels).frame["seq_id"]) == ["A"]


def test_labels_with_a_shifted_row_reject_that_row_only(tmp_path):
    text = labels_csv([("A", {"zebra": 1}), ("B", {})]).splitlines()
    text[1] = "A,extra," + text[1].split(",", 1)[1]
    p = write(tmp_path / "l.csv", "\n".join(text) + "\n")
    labels = read_labels(p)
    assert list(labels.frame["seq_id"]) == ["B"] and [i.line for i in labels.rejected] == [2]
    with pytest.raises(ContractError, match=r"l.csv:2: has 56 fields where the header has 55"):
        read_labels(p, strict=True)
