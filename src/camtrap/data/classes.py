"""Class lists: the competition's 54 columns, or whatever a labels header names.

The competition's submission and labels files use exactly these columns in exactly this order; the
order matters because the submission is compared column by column. Other camera-trap datasets bring
their own list, read from the header of their labels CSV (everything after ``seq_id``).
"""

from __future__ import annotations

from collections.abc import Sequence

SEQ_ID = "seq_id"
FILE_NAME = "file_name"
DATETIME = "datetime"
EMPTY = "empty"

COMPETITION_CLASSES: tuple[str, ...] = (
    "aardvark", "aardwolf", "baboon", "bat", "batearedfox", "buffalo", "bushbuck", "caracal",
    "cattle", "cheetah", "civet", "dikdik", "duiker", "eland", "elephant", "empty",
    "gazellegrants", "gazellethomsons", "genet", "giraffe", "guineafowl", "hare", "hartebeest",
    "hippopotamus", "honeybadger", "hyenaspotted", "hyenastriped", "impala", "insectspider",
    "jackal", "koribustard", "leopard", "lionfemale", "lionmale", "mongoose", "monkeyvervet",
    "ostrich", "otherbird", "porcupine", "reedbuck", "reptiles", "rhinoceros", "rodents",
    "secretarybird", "serval", "steenbok", "topi", "vulture", "warthog", "waterbuck", "wildcat",
    "wildebeest", "zebra", "zorilla",
)  # fmt: skip


def classes_from_header(columns: Sequence[str]) -> tuple[str, ...]:
    """Class list of a labels CSV: every column after ``seq_id``, in file order.

    Raises ``ValueError`` when the header does not start with ``seq_id`` or names a class twice, since
    either would silently shift every probability column of a submission.
    """
    columns = [str(c) for c in columns]
    if not columns or columns[0] != SEQ_ID:
        raise ValueError(f"labels header must start with '{SEQ_ID}', got {columns[:3]!r}")
    classes = columns[1:]
    if not classes:
        raise ValueError("labels header names no class column after 'seq_id'")
    seen: set[str] = set()
    for name in classes:
        if name in seen:
            raise ValueError(f"labels header names class column '{name}' twice")
        seen.add(name)
    return tuple(classes)
