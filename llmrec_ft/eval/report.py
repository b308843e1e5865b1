"""The summary a recipe prints when it ends: its ``metrics.json`` as plain-text tables, then where its artifacts
are -- what RecBole prints after ``run_recbole`` and TRL scripts after ``trainer.train()``.

Recipes write nested metric dicts (``{"test": {"all": {"ndcg@10": ...}, "warm": {...}}}``,
``{"sasrecllm": {"auc_all": ..., "hr@10": ...}}``). Every innermost dict with numbers in it becomes one table
row, named by its path (``test/warm``); rows that share most of their keys are printed as one table, with one
column per key and ``-`` where a row has no value. Top-level plain values (``schedule: dual_stage``) are printed
first, and lists (spectra, curves) are left to the JSON. A key ``x_se`` next to ``x`` is the standard error
of ``x`` and is printed in ``x``'s cell as ``x ± se``.
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


def _render(rows: list[tuple[str, dict]], columns: list[str]) -> list[str]:
    columns = [c for c in columns if not (c.endswith("_se") and c[:-3] in columns)]
    grid = [["", *columns]] + [[name, *(_with_error(values, c) for c in columns)] for name, values in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(columns) + 1)]
    lines = ["  ".join(text.ljust(w) if i == 0 else text.rjust(w) for i, (text, w) in enumerate(zip(line, widths)))
             for line in grid]
    return [lines[0], "-" * len(lines[0]), *lines[1:]]


def format_metrics_table(metrics: Mapping, artifacts: Mapping[str, str | os.PathLike] | None = None,
                         title: str | None = None) -> str:
    """Plain-text summary of a recipe's metrics dict (the content of its ``metrics.json``).

    ``metrics``: nested dicts of numbers/strings (lists are skipped). ``artifacts``: ``{what: path}`` printed
    after the tables (``{"metrics": "runs/x/metrics.json", "model": "runs/x/artifacts"}``). Floats print with 4
    decimals (1 from 100 on), ints with thousands separators, missing cells as ``-``. Raises ``TypeError`` if
    ``metrics`` is not a mapping.
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
        lines += ["", *_render(members, columns)]
    if artifacts:
        lines += [""] + [f"{what}: {path}" for what, path in artifacts.items()]
    return "\n".join(lines).strip("\n")
