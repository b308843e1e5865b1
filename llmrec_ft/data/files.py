"""Reading raw files: one decoding path for every source, so every reader reports bad bytes the same way.

Files are read as bytes line by line (plain or ``.gz``) and each line is decoded on its own, which is what
lets a decoding error name its 1-based row. The structured readers (:func:`iter_json_lines`,
:func:`iter_delimited`, :func:`iter_csv`) also name the field that holds the undecodable bytes.

Encodings: UTF-8 is the default, and a UTF-8 byte-order mark (what spreadsheet programs write) is skipped,
i.e. ``utf-8`` reads like ``utf-8-sig``. Any ASCII-compatible encoding works (``latin-1``, ``cp1252``, ...);
UTF-16/32 files cannot be split into rows byte-wise and are refused with a hint to convert them.

Shared helpers for every source (``llmrec_ft.data.*``):

* ``resolve_encoding(name) -> str``: validate an ``encoding`` option;
* ``iter_lines(path, encoding) -> (row, line)``: text lines, undecodable bytes are a ``DataError`` with the row;
* ``iter_json_lines(path, encoding, required) -> (row, dict)``: JSON lines, errors name row and field;
* ``iter_delimited(path, separator, columns, encoding, header_name, required) -> (row, dict)``: unquoted
  ``\\t``/``::``/``|`` files, fixed columns or a header row;
* ``iter_csv(path, encoding, required) -> (row, dict)``: quoted CSV with a header row;
* ``require_fields(record, fields, path, row)``: missing / null / blank required values (``is_blank``);
* ``undecodable_error(path, encoding, row, field, text)``: the DataError for bytes that did not decode, for a
  reader with its own record format on top of ``_decoded_lines``.

Errors are :class:`~llmrec_ft.data.interactions.DataError` (``"<file>, row <n>, field '<name>': <what>"``).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import json
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

from llmrec_ft.data.interactions import DataError, require_columns

DEFAULT_ENCODING = "utf-8"
_UTF8_BOM = codecs.BOM_UTF8


def resolve_encoding(name: str | None) -> str:
    """Canonical codec name for ``name`` (``None`` -> UTF-8); ``ValueError`` for unknown or non-ASCII-compatible
    encodings. ``utf-8`` and ``utf-8-sig`` both resolve to ``utf-8``: a leading byte-order mark is skipped anyway."""
    name = name or DEFAULT_ENCODING
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise ValueError(f"encoding={name!r} is not a known text encoding (e.g. 'utf-8', 'latin-1', 'cp1252')") from None
    if codec == "utf-8-sig":
        return "utf-8"
    if "\n,\t:|{}\"".encode(codec) != b"\n,\t:|{}\"":
        raise ValueError(f"encoding={name!r} is not ASCII-compatible, so rows cannot be found byte-wise; convert the "
                         f"file first, e.g. `iconv -f {name} -t utf-8 in > out`")
    return codec


def _open_binary(path: Path) -> BinaryIO:
    """Open ``path`` (gzip when it ends in ``.gz``); missing or empty files and folders are DataErrors."""
    if path.is_dir():
        raise DataError(str(path), "is a folder, not a file: pass the file inside it that holds the data")
    if not path.is_file():
        raise DataError(str(path), "file not found")
    if path.stat().st_size == 0:
        raise DataError(str(path), "file is empty")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _decoded_lines(path: str | Path, encoding: str | None) -> Iterator[tuple[int, str, bool]]:
    """``(1-based row, text without line end, decoded cleanly?)`` for every line, blank ones included.

    A line with undecodable bytes comes back with them as surrogate escapes (``errors="surrogateescape"``)
    so that a structured reader can say which field holds them; :func:`undecodable_error` formats the error.
    """
    path, codec = Path(path), resolve_encoding(encoding)
    with _open_binary(path) as handle:
        for row, raw in enumerate(handle, start=1):
            raw = raw.rstrip(b"\r\n")
            if row == 1 and codec == "utf-8" and raw.startswith(_UTF8_BOM):
                raw = raw[len(_UTF8_BOM):]
            try:
                yield row, raw.decode(codec), True
            except UnicodeDecodeError:
                yield row, raw.decode(codec, errors="surrogateescape"), False


def undecodable_error(path: str | Path, encoding: str | None, row: int, field: str | None, text: str) -> DataError:
    """The DataError for undecodable bytes in ``text`` (a surrogate-escaped value of ``field``)."""
    codec = resolve_encoding(encoding)
    raw = text.encode(codec, errors="surrogateescape")
    return DataError(str(path), f"bytes that are not valid {codec} in {raw!r}; set encoding to the file's real "
                                f"encoding (e.g. encoding='latin-1' or 'cp1252')", row, field)


def _first_undecodable(value: Any, name: str | None) -> tuple[str | None, str] | None:
    """``(field, text)`` of the first string inside ``value`` (dicts and lists walked) that holds surrogate escapes."""
    if isinstance(value, str):
        return None if value.isascii() or _decodes(value) else (name, value)
    if isinstance(value, dict):
        for key, inner in value.items():
            key_name = key if name is None else f"{name}.{key}"
            found = _first_undecodable(key, key_name) or _first_undecodable(inner, key_name)
            if found:
                return found
    if isinstance(value, list):
        for index, inner in enumerate(value):
            found = _first_undecodable(inner, f"{name}[{index}]")
            if found:
                return found
    return None


def _decodes(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:  # lone surrogates: bytes that did not decode
        return False


def _raise_undecodable(record: Any, line: str, path: str | Path, encoding: str | None, row: int) -> None:
    """Raise for the first field of ``record`` holding undecodable bytes (the whole line if none is found)."""
    found = _first_undecodable(record, None)
    raise undecodable_error(path, encoding, row, *(found or (None, line)))


def iter_lines(path: str | Path, encoding: str | None = DEFAULT_ENCODING) -> Iterator[tuple[int, str]]:
    """Yield ``(1-based row, line without newline)`` for non-blank lines; undecodable bytes are a DataError."""
    for row, line, clean in _decoded_lines(path, encoding):
        if not clean:
            raise undecodable_error(path, encoding, row, None, line)
        if line.strip():
            yield row, line


def iter_json_lines(path: str | Path, encoding: str | None = DEFAULT_ENCODING,
                    required: Sequence[str] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(row, object)`` for each JSON line; malformed lines, non-objects, missing/null/blank ``required``
    keys and undecodable bytes are DataErrors naming the row (and the field, e.g. ``title`` or ``category[1]``)."""
    for row, line, clean in _decoded_lines(path, encoding):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            if not clean:
                raise undecodable_error(path, encoding, row, None, line) from None
            raise DataError(str(path), f"invalid JSON ({err.msg})", row) from None
        if not clean:
            _raise_undecodable(obj, line, path, encoding, row)
        if not isinstance(obj, dict):
            raise DataError(str(path), "each line must be a JSON object", row)
        require_fields(obj, required, path, row)
        yield row, obj


def iter_delimited(path: str | Path, separator: str, columns: list[str] | None = None,
                   encoding: str | None = DEFAULT_ENCODING, header_name: Callable[[str], str] = str.strip,
                   required: Sequence[str] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(row, {column: value})`` from an unquoted ``separator``-delimited file (MovieLens ``\\t``/``::``/
    ``|``, RecBole atomic files). ``columns=None``: the first non-blank line is the header, its names passed
    through ``header_name``, and the ``required`` columns must be among them. A row with the wrong number of
    fields, a missing/blank ``required`` value, or undecodable bytes is a DataError."""
    header = columns
    for row, line, clean in _decoded_lines(path, encoding):
        if not line.strip():
            continue
        fields = line.split(separator)
        if header is None:
            if not clean:
                raise undecodable_error(path, encoding, row, None, line)
            header = [header_name(name) for name in fields]
            require_columns(header, list(required), str(path), row)
            continue
        if len(fields) != len(header):
            raise DataError(str(path), f"expected {len(header)} {separator!r}-separated fields ({', '.join(header)}), "
                                       f"got {len(fields)}", row)
        record = dict(zip(header, fields))
        if not clean:
            _raise_undecodable(record, line, path, encoding, row)
        require_fields(record, required, path, row)
        yield row, record
    if header is None:
        raise DataError(str(path), "file has no header")


def iter_csv(path: str | Path, encoding: str | None = DEFAULT_ENCODING,
             required: Sequence[str] = ()) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(row, {column: value})`` from a CSV file whose row 1 is the header (quoted fields may span lines;
    ``row`` is where the record starts). Missing ``required`` columns or values, wrong field counts and
    undecodable bytes are DataErrors."""
    lines = _decoded_lines(path, encoding)
    state = {"row": 0, "clean": True}

    def text():
        for row, line, clean in lines:
            state["row"], state["clean"] = row, state["clean"] and clean
            yield line + "\n"

    reader = csv.reader(text())
    header = next(reader, None)
    if not header or not any(name.strip() for name in header):
        raise DataError(str(path), "file has no header")
    if not state["clean"]:
        raise undecodable_error(path, encoding, 1, None, ",".join(header))
    header = [name.strip() for name in header]
    require_columns(header, list(required), str(path), 1)
    while True:
        start, state["clean"] = state["row"] + 1, True
        fields = next(reader, None)
        if fields is None:
            return
        if not fields or not "".join(fields).strip():
            continue
        if len(fields) != len(header):
            raise DataError(str(path), f"expected {len(header)} fields, got {len(fields)}", start)
        record = dict(zip(header, fields))
        if not state["clean"]:
            _raise_undecodable(record, ",".join(fields), path, encoding, start)
        require_fields(record, required, path, start)
        yield start, record


def is_blank(value: Any) -> bool:
    """Missing for the purpose of a required field: ``None``, or a string that is empty after stripping."""
    return value is None or (isinstance(value, str) and not value.strip())


def require_fields(record: dict[str, Any], fields: Sequence[str], path: str | Path, row: int) -> None:
    """Every name in ``fields`` must hold a value: missing, null or blank is a DataError naming the field."""
    for name in fields:
        if is_blank(record.get(name)):
            raise DataError(str(path), "missing value", row, name)
