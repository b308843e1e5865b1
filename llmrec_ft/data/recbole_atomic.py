"""RecBole atomic files (``<name>.inter`` / ``<name>.item``), including the embedded MovieLens-100K.

The header names each column as ``name:type``; we need ``user_id``, ``item_id`` and ``timestamp``
in ``.inter`` (``rating`` optional) and use ``.item`` for titles. The embedded default is the
ML-100K copy that ships inside the pinned ``recbole==1.2.1`` wheel (see :mod:`llmrec_ft.assets`).
"""

from __future__ import annotations

from pathlib import Path

from llmrec_ft.assets import RECBOLE, cache_dir, extract_member
from llmrec_ft.data.files import iter_delimited
from llmrec_ft.data.interactions import DataError, InteractionLog, ItemInfo, describe_item, parse_rating, parse_timestamp

TITLE_FIELDS = ("movie_title", "title", "item_name")
YEAR_FIELDS = ("release_year", "year")
GENRE_FIELDS = ("class", "genre", "categories")


def embedded_ml100k() -> Path:
    """Folder with ``ml-100k.inter``/``.item`` extracted from the pinned RecBole wheel."""
    folder = cache_dir() / "raw" / "ml-100k-recbole"
    for suffix in ("inter", "item"):
        extract_member(RECBOLE, f"recbole/dataset_example/ml-100k/ml-100k.{suffix}", folder / f"ml-100k.{suffix}")
    return folder


def _column_name(header_entry: str) -> str:
    """``'item_id:token'`` -> ``'item_id'``."""
    return header_entry.split(":")[0].strip()


def read_atomic(folder: str | Path, name: str | None = None,
                encoding: str | None = None) -> tuple[InteractionLog, dict[str, ItemInfo], list[Path]]:
    """Read ``<folder>/<name>.inter`` and ``<folder>/<name>.item`` (name defaults to the folder name)."""
    folder = Path(folder)
    name = name or folder.name
    inter_path, item_path = folder / f"{name}.inter", folder / f"{name}.item"
    log = InteractionLog(str(inter_path), "item_id")
    for row, rec in iter_delimited(inter_path, "\t", None, encoding, _column_name, ["user_id", "item_id", "timestamp"]):
        log.append(rec["user_id"], rec["item_id"], parse_timestamp(rec["timestamp"], str(inter_path), row, "timestamp"),
                   parse_rating(rec.get("rating"), str(inter_path), row, "rating"), row)
    items = {}
    for row, rec in iter_delimited(item_path, "\t", None, encoding, _column_name, ["item_id"]):
        if not items:
            title_field = next((f for f in TITLE_FIELDS if f in rec), None)
            if title_field is None:
                raise DataError(str(item_path), f"no title column: expected one of {list(TITLE_FIELDS)}, found "
                                                f"{list(rec)}", row=1)
            year_field = next((f for f in YEAR_FIELDS if f in rec), None)
            genre_field = next((f for f in GENRE_FIELDS if f in rec), None)
        items[rec["item_id"]] = describe_item(rec[title_field], rec[year_field] if year_field else None,
                                              rec[genre_field].split() if genre_field else None,
                                              path=str(item_path), row=row, title_field=title_field)
    return log, items, [inter_path, item_path]
