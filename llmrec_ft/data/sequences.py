"""Pre-split sequence files: one line per user, ``user item item ...`` in time order, plus an item-text TSV.

This is the format of the S3-Rec / P5 / TIGER / LC-Rec benchmark copies of Amazon Beauty and Yelp
(``../shared/data/amazon14-beauty``, ``../shared/data/yelp``): ids are whitespace-separated tokens, the
first is the user, the rest are the items oldest first. The files carry no timestamps, so the position in
the line is used as the time (0, 1, 2, ...); the stable chronological sort of ``build_sequences`` then keeps
the file's order, and repeated consumption (Yelp has ``12 12 12``) stays as it is: same item at different
positions is not a duplicate event.

The item file is a TSV with a header: the first column is the item id, the others are text. The item
*title* (what prompts show and title generation produces) is the first column named ``title``, ``name`` or
``keywords`` (Beauty: lower-case title keywords; Yelp: business name), else the second column; an empty
title falls back to the first non-empty column (one Beauty item has no keywords, only its ASIN), so the
published split is kept whole. The item *text* (for text embeddings) is the title followed by the other
columns, except identifier columns such as ``asin``. Every value goes through ``data.text.clean_text``.
Numeric ids keep their numbering (items re-index ``1..N`` in raw-id order, which is the file's own when it
is 1..N), so the published splits and item numbers are reproduced.
"""

from __future__ import annotations

from pathlib import Path

from llmrec_ft.data.files import iter_delimited, iter_lines
from llmrec_ft.data.interactions import DataError, InteractionLog, ItemInfo, describe_item
from llmrec_ft.data.text import clean_text

TITLE_COLUMNS = ("title", "name", "keywords")
IDENTIFIER_COLUMNS = ("asin", "parent_asin", "business_id", "url")


def read_item_tsv(path: str | Path, encoding: str | None = None) -> dict[str, ItemInfo]:
    """``{raw item id: ItemInfo}`` from a TSV with a header (id column first, then text columns)."""
    path, items = Path(path), {}
    for row, record in iter_delimited(path, "\t", encoding=encoding):
        header = list(record)
        if len(header) < 2:
            raise DataError(str(path), f"expected a header with an id column and at least one text column, got "
                                       f"{header}", row=1)
        id_column = header[0]
        title_column = next((c for c in TITLE_COLUMNS if c in header[1:]), header[1])
        raw_id = record[id_column].strip()
        if not raw_id:
            raise DataError(str(path), "missing value", row, id_column)
        if raw_id in items:
            raise DataError(str(path), f"item id {raw_id!r} appears twice", row, id_column)
        values = {c: clean_text(v) for c, v in record.items()}
        title = next((v for v in [values[title_column], *(values[c] for c in header[1:])] if v), "")
        extra = ". ".join(f"{c}: {values[c]}" for c in header[1:]
                          if c != title_column and c.lower() not in IDENTIFIER_COLUMNS and values[c])
        items[raw_id] = describe_item(title or None, extra=extra or None, path=str(path), row=row,
                                      title_field=title_column)
    if not items:
        raise DataError(str(path), "no items after the header")
    return items


def read_sequences(sequences_path: str | Path, items_path: str | Path, encoding: str | None = None
                   ) -> tuple[InteractionLog, dict[str, ItemInfo], list[Path]]:
    """Parse both files into the common ``(InteractionLog, catalog, source files)`` form.

    Raises :class:`DataError` naming the file and 1-based row for a line with no item, a user listed twice,
    or (later, in ``check_items_known``) an item missing from the item file."""
    sequences_path, items_path = Path(sequences_path), Path(items_path)
    log = InteractionLog(str(sequences_path))
    seen_users: dict[str, int] = {}
    for row, line in iter_lines(sequences_path, encoding):
        user, *items = line.split()
        if not items:
            raise DataError(str(sequences_path), f"user {user!r} has no items", row, "items")
        if user in seen_users:
            raise DataError(str(sequences_path), f"user {user!r} already has a line (row {seen_users[user]})", row,
                            "user")
        seen_users[user] = row
        for position, item in enumerate(items):
            log.append(user, item, position, float("nan"), row)
    return log, read_item_tsv(items_path, encoding), [sequences_path, items_path]
