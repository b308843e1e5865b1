"""Generic interaction files: CSV (header ``user,item,timestamp[,rating]``) or JSON lines with the same keys,
plus an item file (CSV or JSON lines) with ``item,title[,text]``.

The simplest way to bring your own data: export those columns from wherever the data lives. Timestamps are
kept in whatever unit the file uses; ``text`` (optional) replaces the title as the text the LLM reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from llmrec_ft.data.files import iter_csv, iter_json_lines
from llmrec_ft.data.interactions import DataError, InteractionLog, ItemInfo, describe_item, parse_rating, parse_timestamp
from llmrec_ft.data.text import clean_text


def _records(path: Path, required: list[str], encoding: str | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row, record)`` from a CSV (row 1 = header) or JSON-lines file, checking required fields."""
    is_json = path.suffix in (".jsonl", ".json") or path.name.endswith((".jsonl.gz", ".json.gz"))
    return iter_json_lines(path, encoding, required) if is_json else iter_csv(path, encoding, required)


def read_generic(interactions_path: str | Path, items_path: str | Path,
                 encoding: str | None = None) -> tuple[InteractionLog, dict[str, ItemInfo], list[Path]]:
    interactions_path, items_path = Path(interactions_path), Path(items_path)
    log = InteractionLog(str(interactions_path))
    for row, rec in _records(interactions_path, ["user", "item", "timestamp"], encoding):
        log.append(str(rec["user"]), str(rec["item"]),
                   parse_timestamp(rec["timestamp"], str(interactions_path), row, "timestamp"),
                   parse_rating(rec.get("rating"), str(interactions_path), row, "rating"), row)
    items = {}
    for row, rec in _records(items_path, ["item"], encoding):
        info = describe_item(rec.get("title"), path=str(items_path), row=row, title_field="title")
        text = clean_text(rec.get("text"))
        if info.has_text and text:
            info.text = text
        item = str(rec["item"])
        if item in items:  # a second row for one id would silently replace the first one's text
            raise DataError(str(items_path), f"item id {item!r} is already defined in row {items[item].row}",
                            row, "item")
        items[item] = info
    return log, items, [interactions_path, items_path]
