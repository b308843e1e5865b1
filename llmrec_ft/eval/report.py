"""The summary a recipe prints when it ends: its ``metrics.json`` as plain-text tables, then where its artifacts
are -- what RecBole prints after ``run_recbole`` and TRL scripts after ``trainer.train()``.

Recipes write nested metric dicts (``{"test": {"all": {"ndcg@10": ...}, "warm": {...}}}``,
``{"sasrecllm": {"auc_all": ..., "hr@10": ...}}``). Every innermost dict with numbers in it becomes one table
row, named by its path (``test/warm``); rows that share most of their keys are printed as one table, with one
column per key and ``-`` where a row has no value. Top-level plain values (``schedule: dual_stage``) are printed
first, and lists (spectra, curves) are left to the JSON. A key ``x_se`` next to ``x`` is the standard error
of ``x`` and is printed in ``x``'s cell as ``x ± se``. A table wider than a terminal (100 columns) is cut into
narrower tables with the same rows, keeping columns of one family (``auc_warm``, ``auc_cold``, ``auc_all``)
together.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4f}"
    return str(value)


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _rows(metrics: Mapping, path: str = "") -> list[tuple[str, dict]]:
    """``(path, {key: scalar})`` for every nested dict holding at least one number, depth first."""
    rows, own = [], {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            rows.extend(_rows(value, f"{path}/{key}" if path else str(key)))
        elif _is_scalar(value):
            own[str(key)] = value
    if path and any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in own.values()):
        rows.insert(0, (path, own))
    return rows


def _with_error(values: dict, column: str) -> str:
    error = values.get(f"{column}_se")
    if values.get(column) is None or error is None:
        return _cell(values.get(column))
    return f"{_cell(values[column])} ± {_cell(error)}"


def _family(column: str, columns: list[str]) -> str:
    """``auc_warm`` -> ``auc`` when another column shares that prefix (``auc_cold``), else the column itself."""
    prefix = column.rsplit("_", 1)[0]
    return prefix if "_" in column and sum(c.startswith(prefix + "_") for c in columns) > 1 else column


def _render(rows: list[tuple[str, dict]], columns: list[str], width: int) -> list[str]:
    """One table, or several narrower ones with the same rows when it is wider than ``width`` characters: columns
    of one family (``auc_warm``, ``auc_cold``, ``auc_all``) stay side by side, and no cell is dropped."""
    columns = [c for c in columns if not (c.endswith("_se") and c[:-3] in columns)]
    families = list(dict.fromkeys(_family(c, columns) for c in columns))
    columns = sorted(columns, key=lambda c: families.index(_family(c, columns)))
    cells = {c: [c, *(_with_error(values, c) for _, values in rows)] for c in columns}
    column_width = {c: max(map(len, cells[c])) for c in columns}
    names = ["", *(name for name, _ in rows)]
    name_width = max(map(len, names))
    chunks: list[list[str]] = [[]]
    for family in families:
        members = [c for c in columns if _family(c, columns) == family]
        too_wide = _width(name_width, members, column_width) > width  # then it is split column by column
        for piece in ([c] for c in members) if too_wide else [members]:
            if chunks[-1] and _width(name_width, chunks[-1] + piece, column_width) > width:
                chunks.append([])
            chunks[-1].extend(piece)
    lines = []
    for chunk in chunks:
        table = ["  ".join([name.ljust(name_width), *(cells[c][i].rjust(column_width[c]) for c in chunk)])
                 for i, name in enumerate(names)]
        lines += ([""] if lines else []) + [table[0], "-" * len(table[0]), *table[1:]]
    return lines


def _width(name_width: int, columns: list[str], column_width: dict[str, int]) -> int:
    return name_width + sum(2 + column_width[c] for c in columns)


def format_metrics_table(metrics: Mapping, artifacts: Mapping[str, str | os.PathLike] | None = None,
                         title: str | None = None, width: int = 100) -> str:
    """Plain-text summary of a recipe's metrics dict (the content of its ``metrics.json``).

    ``metrics``: nested dicts of numbers/strings (lists are skipped). ``artifacts``: ``{what: path}`` printed
    after the tables (``{"metrics": "runs/x/metrics.json", "model": "runs/x/artifacts"}``). Floats print with 4
    decimals (1 from 100 on), ints with thousands separators, missing cells as ``-``. A table wider than ``width``
    characters is printed as several narrower ones with the same rows (a terminal's 100 columns by default; a
    single column wider than that stays whole). Raises ``TypeError`` if ``metrics`` is not a mapping.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping (the metrics.json dict), got {type(metrics).__name__}")
    lines = [title] if title else []
    header = {str(k): v for k, v in metrics.items() if _is_scalar(v)}
    lines += [f"{key}: {_cell(value)}" for key, value in header.items()]
    tables: list[tuple[list[str], list[tuple[str, dict]]]] = []  # (columns, rows)
    for name, values in _rows(metrics):
        keys = list(values)
        for columns, members in tables:  # join the first table that already has most of this row's keys
            if sum(k in columns for k in keys) * 2 > len(keys):
                columns.extend(k for k in keys if k not in columns)
                members.append((name, values))
                break
        else:
            tables.append((keys, [(name, values)]))
    for columns, members in tables:
        lines += ["", *_render(members, columns, width)]
    if artifacts:
        lines += [""] + [f"{what}: {path}" for what, path in artifacts.items()]
    return "\n".join(lines).strip("\n")
