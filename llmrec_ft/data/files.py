"""Reading raw files: plain or gzip text, JSON lines with row-numbered errors."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any, Iterator

from llmrec_ft.data.interactions import DataError


def open_text(path: str | Path, encoding: str = "utf-8") -> io.TextIOBase:
    """Open a text file, transparently decompressing ``.gz``; missing or empty files are DataErrors."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "file not found")
    if path.stat().st_size == 0:
        raise DataError(str(path), "file is empty")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, errors="strict")
    return open(path, encoding=encoding, newline="")


def iter_lines(path: str | Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield ``(1-based row, line without newline)`` for non-blank lines."""
    with open_text(path, encoding) as handle:
        try:
            for row, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield row, line
        except UnicodeDecodeError as err:
            raise DataError(str(path), f"not valid {encoding} text ({err.reason})") from None


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row, object)`` for each JSON line; a malformed line is a DataError naming its row."""
    for row, line in iter_lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(str(path), f"invalid JSON ({err.msg})", row) from None
        if not isinstance(obj, dict):
            raise DataError(str(path), "each line must be a JSON object", row)
        yield row, obj


def require_fields(obj: dict[str, Any], fields: list[str], path: str | Path, row: int) -> None:
    for name in fields:
        if obj.get(name) in (None, ""):
            raise DataError(str(path), "missing value", row, name)
