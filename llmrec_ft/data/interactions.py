"""The in-memory form every source is parsed into, and the error every parser raises.

Sources differ (tab, ``::``, CSV, JSON lines, gzip) but all end as an :class:`InteractionLog`
(one row per user-item event, with the file and line it came from) plus an item catalog. Keeping
the provenance lets preprocessing name the exact row of a bad input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from llmrec_ft.data.text import clean_list, clean_text


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
    """One catalogue entry: ``title`` and the ``text`` the LLM reads, both cleaned by
    :func:`llmrec_ft.data.text.clean_text`. ``title == ""`` means the source had no usable title (missing, null,
    blank or empty after cleaning); ``path``/``row``/``title_field`` say where, for the error or the count.
    ``title_cleaned``: the raw title differed from the cleaned one (HTML, whitespace)."""

    title: str
    text: str
    path: str = ""
    row: int | None = None
    title_field: str = "title"
    title_cleaned: bool = False

    @property
    def has_text(self) -> bool:
        return bool(self.title)


@dataclass
class InteractionLog:
    """Column-oriented interactions; ``rows[i]`` is the 1-based line number in ``path``.

    ``item_field`` is the source's own name for the item column (``parent_asin``, ``MovieID`` ...), so that
    errors name what the user sees in the file. ``time_unit`` is the resolution timestamps are kept in
    (``"s"``, ``"ms"``, or ``"as in file"``): never converted, so events a fraction of a second apart stay
    ordered and distinct."""

    path: str
    item_field: str = "item"
    time_unit: str = "as in file"
    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    timestamps: list[int | float] = field(default_factory=list)
    ratings: list[float] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)

    def append(self, user: str, item: str, timestamp: int | float, rating: float, row: int) -> None:
        self.users.append(user)
        self.items.append(item)
        self.timestamps.append(timestamp)
        self.ratings.append(rating)
        self.rows.append(row)

    def __len__(self) -> int:
        return len(self.users)

    def empty_like(self) -> "InteractionLog":
        """A log with the same provenance and field names, and no rows (what filters fill)."""
        return InteractionLog(self.path, self.item_field, self.time_unit)

    def copy_row(self, i: int, into: "InteractionLog") -> None:
        into.append(self.users[i], self.items[i], self.timestamps[i], self.ratings[i], self.rows[i])


def parse_timestamp(value, path: str, row: int, field_name: str) -> int | float:
    """A numeric timestamp at the file's own resolution: integers (seconds, or milliseconds as Amazon 2023 stores
    them) stay exact ints -- parsed without a float round trip, so 19-digit nanosecond stamps keep every digit;
    fractional values (``"978300760.25"``) stay floats. Anything else is a DataError."""
    if isinstance(value, bool):
        raise DataError(path, f"timestamp {value!r} is not numeric", row, field_name)
    if isinstance(value, int):
        return value
    text = str(value).strip() if value is not None else ""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        raise DataError(path, f"timestamp {value!r} is not numeric", row, field_name) from None
    if not math.isfinite(number):
        raise DataError(path, f"timestamp {value!r} is not finite", row, field_name)
    return int(number) if number.is_integer() else number


def parse_rating(value, path: str, row: int, field_name: str) -> float:
    """A float rating; missing ratings (implicit feedback: absent, null or blank) become NaN."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    if isinstance(value, bool):
        raise DataError(path, f"rating {value!r} is not numeric", row, field_name)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(path, f"rating {value!r} is not numeric", row, field_name) from None


def require_columns(header: list[str], required: list[str], path: str, row: int = 1) -> dict[str, int]:
    """Map column name -> index, failing with the list of what is missing (``row``: the header's row)."""
    missing = [name for name in required if name not in header]
    if missing:
        raise DataError(path, f"missing column(s) {missing}; found {header}", row=row)
    return {name: header.index(name) for name in header}


def describe_item(title, year=None, genres=None, extra=None, *, path: str = "", row: int | None = None,
                  title_field: str = "title") -> ItemInfo:
    """The item text the LLM reads, ``'Title (Year). Genres: A, B. <extra>'``, every part cleaned by
    :func:`~llmrec_ft.data.text.clean_text` (``genres``: :func:`~llmrec_ft.data.text.clean_list`, so null or blank
    entries vanish). ``title`` may be ``None``/blank: the item then has no text (``has_text`` is False) and
    ``path``/``row``/``title_field`` locate it for the ``missing_text`` policy."""
    clean_title = clean_text(title)
    info = ItemInfo(clean_title, "", str(path), row, title_field, title_cleaned=bool(clean_title) and clean_title != title)
    if not clean_title:
        return info
    year, genres, extra = clean_text(year), clean_list(genres), clean_text(extra)
    text = f"{clean_title} ({year})" if year else clean_title
    if genres:
        text += ". Genres: " + ", ".join(genres)
    if extra:
        text += ". " + extra
    info.text = text
    return info
