"""The in-memory form every source is parsed into, and the error every parser raises.

Sources differ (tab, ``::``, CSV, JSON lines, gzip) but all end as an :class:`InteractionLog`
(one row per user-item event, with the file and line it came from) plus an item catalog. Keeping
the provenance lets preprocessing name the exact row of a bad input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class DataError(ValueError):
    """Bad input data. The message always names the file, and the row/field where known."""

    def __init__(self, path: str, message: str, row: int | None = None, field: str | None = None):
        where = str(path)
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")
        self.path, self.row, self.field = str(path), row, field


@dataclass
class ItemInfo:
    title: str
    text: str


@dataclass
class InteractionLog:
    """Column-oriented interactions; ``rows[i]`` is the 1-based line number in ``path``."""

    path: str
    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    ratings: list[float] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)

    def append(self, user: str, item: str, timestamp: int, rating: float, row: int) -> None:
        self.users.append(user)
        self.items.append(item)
        self.timestamps.append(timestamp)
        self.ratings.append(rating)
        self.rows.append(row)

    def __len__(self) -> int:
        return len(self.users)


def parse_timestamp(value: str, path: str, row: int, field_name: str) -> int:
    """Integer seconds (or milliseconds, as Amazon 2023 stores them); anything else is a DataError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(path, f"timestamp {value!r} is not numeric", row, field_name) from None
    if not math.isfinite(number):
        raise DataError(path, f"timestamp {value!r} is not finite", row, field_name)
    return int(number)


def parse_rating(value: str | None, path: str, row: int, field_name: str) -> float:
    """A float rating; missing ratings (implicit feedback) become NaN."""
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(path, f"rating {value!r} is not numeric", row, field_name) from None


def require_columns(header: list[str], required: list[str], path: str) -> dict[str, int]:
    """Map column name -> index, failing with the list of what is missing."""
    missing = [name for name in required if name not in header]
    if missing:
        raise DataError(path, f"missing column(s) {missing}; found {header}", row=1)
    return {name: header.index(name) for name in header}


def describe_item(title: str, year: str | None = None, genres: list[str] | None = None,
                  extra: str | None = None) -> ItemInfo:
    """The item text the LLM reads: 'Title (Year). Genres: A, B. <extra>'."""
    text = f"{title} ({year})" if year else title
    if genres:
        text += ". Genres: " + ", ".join(genres)
    if extra:
        text += ". " + extra
    return ItemInfo(title=title, text=text)
