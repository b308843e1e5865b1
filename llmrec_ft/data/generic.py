"""Generic interaction files: CSV (header ``user,item,timestamp[,rating]``) or JSON lines with the same keys,
plus an item file (CSV or JSON lines) with ``item,title[,text]``.

The simplest way to bring your own data: export those columns from wherever the data lives.
"""

from __future__ import annotations

import csv
from pathlib import Path

from llmrec_ft.data.files import iter_json_lines, open_text, require_fields
from llmrec_ft.data.interactions import (DataError, InteractionLog, ItemInfo, describe_item, parse_rating,
                                         parse_timestamp, require_columns)


def _records(path: Path, required: list[str]):
    """Yield ``(row, dict)`` from a CSV (row 1 = header) or JSON-lines file, checking required columns."""
    if path.suffix in (".jsonl", ".json") or path.name.endswith((".jsonl.gz", ".json.gz")):
        for row, obj in iter_json_lines(path):
            require_fields(obj, required, path, row)
            yield row, {key: None if value is None else str(value) for key, value in obj.items()}
        return
    with open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise DataError(str(path), "file has no header")
        require_columns(header, required, str(path))
        for row, fields in enumerate(reader, start=2):
            if not fields:
                continue
            if len(fields) != len(header):
                raise DataError(str(path), f"expected {len(header)} fields, got {len(fields)}", row)
            record = dict(zip(header, fields))
            require_fields(record, required, path, row)
            yield row, record


def read_generic(interactions_path: str | Path, items_path: str | Path) -> tuple[InteractionLog, dict[str, ItemInfo], list[Path]]:
    interactions_path, items_path = Path(interactions_path), Path(items_path)
    log = InteractionLog(str(interactions_path))
    for row, rec in _records(interactions_path, ["user", "item", "timestamp"]):
        log.append(rec["user"], rec["item"], parse_timestamp(rec["timestamp"], str(interactions_path), row, "timestamp"),
                   parse_rating(rec.get("rating"), str(interactions_path), row, "rating"), row)
    items = {}
    for row, rec in _records(items_path, ["item", "title"]):
        info = describe_item(rec["title"])
        items[rec["item"]] = ItemInfo(info.title, rec.get("text") or info.text)
    return log, items, [interactions_path, items_path]
