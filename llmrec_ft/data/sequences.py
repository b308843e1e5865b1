"""Pre-split sequence files: one line per user, ``user item item ...`` in time order, plus an item-text TSV.

This is the format of the S3-Rec / P5 / TIGER / LC-Rec benchmark copies of Amazon Beauty and Yelp
(``../shared/data/amazon14-beauty``, ``../shared/data/yelp``): ids are whitespace-separated tokens, the
first is the user, the rest are the items oldest first. The files carry no timestamps, so the position in
the line is used as the time (0, 1, 2, ...); the stable chronological sort of ``build_sequences`` then keeps
the file's order, and repeated consumption (Yelp has ``12 12 12``) stays as it is: same item at different
positions is not a duplicate event.

The item file is a TSV with a header: the first column is the item id, the others are text. The item
*title* (what prompts show and title generation produces) is the first column named ``title``, ``name`` or
``keywords`` (Beauty: lower-case title keywords; Yelp: business name), else the second column (an empty
title falls back to the first non-empty column: one Beauty item has no keywords, only its ASIN); the item
*text* (for text embeddings) is the title followed by the other columns, except identifier columns such as
``asin``. Numeric ids keep their numbering (items re-index ``1..N`` in raw-id order, which is the file's
own when it is 1..N), so the published splits and item numbers are reproduced.
"""

from __future__ import annotations

import csv
from pathlib import Path

from llmrec_ft.data.files import iter_lines, open_text
from llmrec_ft.data.interactions import DataError, InteractionLog, ItemInfo

TITLE_COLUMNS = ("title", "name", "keywords")
IDENTIFIER_COLUMNS = ("asin", "parent_asin", "business_id", "url")


def read_item_tsv(path: str | Path) -> dict[str, ItemInfo]:
    """``{raw item id: ItemInfo}`` from a TSV with a header (id column first, then text columns)."""
    path = Path(path)
    with open_text(path) as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if not header or len(header) < 2:
            raise DataError(str(path), f"expected a header with an id column and at least one text column, got "
                                       f"{header}", row=1)
        title_column = next((c for c in TITLE_COLUMNS if c in header[1:]), header[1])
        title_index = header.index(title_column)
        extra = [i for i, c in enumerate(header) if i not in (0, title_index) and c.lower() not in IDENTIFIER_COLUMNS]
        items: dict[str, ItemInfo] = {}
        try:
            for row, fields in enumerate(reader, start=2):
                if not fields or not any(f.strip() for f in fields):
                    continue
                if len(fields) != len(header):
                    raise DataError(str(path), f"expected {len(header)} tab-separated fields, got {len(fields)}", row)
                raw_id = fields[0].strip()
                if not raw_id:
                    raise DataError(str(path), "missing value", row, header[0])
                # An empty title (one Beauty item has no keywords) falls back to the next non-empty column.
                title = next((f.strip() for f in [fields[title_index], *fields[1:]] if f.strip()), "")
                if not title:
                    raise DataError(str(path), "missing value", row, title_column)
                if raw_id in items:
                    raise DataError(str(path), f"item id {raw_id!r} appears twice", row, header[0])
                text = ". ".join([title, *(f"{header[i]}: {fields[i].strip()}" for i in extra if fields[i].strip())])
                items[raw_id] = ItemInfo(title=title, text=text)
        except UnicodeDecodeError as err:
            raise DataError(str(path), f"not valid UTF-8 text ({err.reason})") from None
    if not items:
        raise DataError(str(path), "no items after the header")
    return items


def read_sequences(sequences_path: str | Path, items_path: str | Path
                   ) -> tuple[InteractionLog, dict[str, ItemInfo], list[Path]]:
    """Parse both files into the common ``(InteractionLog, catalog, source files)`` form.

    Raises :class:`DataError` naming the file and 1-based row for a line with no item, a user listed twice,
    or (later, in ``check_items_known``) an item missing from the item file."""
    sequences_path, items_path = Path(sequences_path), Path(items_path)
    log = InteractionLog(str(sequences_path))
    seen_users: dict[str, int] = {}
    for row, line in iter_lines(sequences_path):
        user, *items = line.split()
        if not items:
            raise DataError(str(sequences_path), f"user {user!r} has no items", row, "items")
        if user in seen_users:
            raise DataError(str(sequences_path), f"user {user!r} already has a line (row {seen_users[user]})", row,
                            "user")
        seen_users[user] = row
        for position, item in enumerate(items):
            log.append(user, item, position, float("nan"), row)
    return log, read_item_tsv(items_path), [sequences_path, items_path]
