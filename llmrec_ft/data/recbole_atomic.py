"""RecBole atomic files (``<name>.inter`` / ``<name>.item``), including the embedded MovieLens-100K.

The header names each column as ``name:type``; we need ``user_id``, ``item_id`` and ``timestamp``
in ``.inter`` (``rating`` optional) and use ``.item`` for titles. The embedded default is the
ML-100K copy that ships inside the pinned ``recbole==1.2.1`` wheel (see :mod:`llmrec_ft.assets`).
"""

from __future__ import annotations

from pathlib import Path

from llmrec_ft.assets import RECBOLE, cache_dir, extract_member
from llmrec_ft.data.files import iter_lines
from llmrec_ft.data.interactions import (DataError, InteractionLog, ItemInfo, describe_item, parse_rating,
                                         parse_timestamp, require_columns)

TITLE_FIELDS = ("movie_title", "title", "item_name")
YEAR_FIELDS = ("release_year", "year")
GENRE_FIELDS = ("class", "genre", "categories")


def embedded_ml100k() -> Path:
    """Folder with ``ml-100k.inter``/``.item`` extracted from the pinned RecBole wheel."""
    folder = cache_dir() / "raw" / "ml-100k-recbole"
    for suffix in ("inter", "item"):
        extract_member(RECBOLE, f"recbole/dataset_example/ml-100k/ml-100k.{suffix}", folder / f"ml-100k.{suffix}")
    return folder


def _header(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    lines = iter_lines(path)
    try:
        _, first = next(lines)
    except StopIteration:
        raise DataError(str(path), "file has no header") from None
    names = [column.split(":")[0] for column in first.split("\t")]
    rows = []
    for row, line in lines:
        fields = line.split("\t")
        if len(fields) != len(names):
            raise DataError(str(path), f"expected {len(names)} tab-separated fields, got {len(fields)}", row)
        rows.append((row, fields))
    return names, rows


def read_atomic(folder: str | Path, name: str | None = None) -> tuple[InteractionLog, dict[str, ItemInfo], list[Path]]:
    """Read ``<folder>/<name>.inter`` and ``<folder>/<name>.item`` (name defaults to the folder name)."""
    folder = Path(folder)
    name = name or folder.name
    inter_path, item_path = folder / f"{name}.inter", folder / f"{name}.item"
    names, rows = _header(inter_path)
    col = require_columns(names, ["user_id", "item_id", "timestamp"], str(inter_path))
    log = InteractionLog(str(inter_path))
    for row, fields in rows:
        rating = fields[col["rating"]] if "rating" in col else None
        log.append(fields[col["user_id"]], fields[col["item_id"]],
                   parse_timestamp(fields[col["timestamp"]], str(inter_path), row, "timestamp"),
                   parse_rating(rating, str(inter_path), row, "rating"), row)
    names, rows = _header(item_path)
    col = require_columns(names, ["item_id"], str(item_path))
    title_col = next((col[f] for f in TITLE_FIELDS if f in col), None)
    year_col = next((col[f] for f in YEAR_FIELDS if f in col), None)
    genre_col = next((col[f] for f in GENRE_FIELDS if f in col), None)
    items = {}
    for row, fields in rows:
        item_id = fields[col["item_id"]]
        title = fields[title_col] if title_col is not None else item_id
        items[item_id] = describe_item(title, fields[year_col] if year_col is not None else None,
                                       fields[genre_col].split() if genre_col is not None else None)
    return log, items, [inter_path, item_path]
