"""From a raw interaction log to leave-one-out sequences.

The protocol is the one SASRec, RecBole (``LS``/leave-one-out, ``TO`` order) and the LLM-rec papers use:
each user's interactions sorted by time (ties keep file order), the last item is the test target,
the second last the validation target, everything before is training. Items are re-indexed
``1..N`` (0 is padding) in the order of their raw ids, users ``0..U-1``.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass

from llmrec_ft.data.interactions import DataError, InteractionLog, ItemInfo

MIN_SEQUENCE_LENGTH = 3  # leave-one-out needs one train, one valid and one test item


@dataclass
class UserSequence:
    raw_user_id: str
    items: list[int]
    ratings: list[float]
    timestamps: list[int]


def check_items_known(log: InteractionLog, items: dict[str, ItemInfo], item_file: str, unknown_items: str) -> InteractionLog:
    """Every interacted item must be in the catalog; ``unknown_items='drop'`` drops those rows instead."""
    if unknown_items not in ("error", "drop"):
        raise ValueError(f"unknown_items must be 'error' or 'drop', got {unknown_items!r}")
    kept = InteractionLog(log.path)
    for i, item in enumerate(log.items):
        if item in items:
            kept.append(log.users[i], item, log.timestamps[i], log.ratings[i], log.rows[i])
        elif unknown_items == "error":
            raise DataError(log.path, f"item id {item!r} is not in the item file {item_file}", log.rows[i], "item")
    if not len(kept):
        raise DataError(log.path, "no interactions left (empty file, or no item matched the item file)")
    return kept


def check_duplicates(log: InteractionLog, duplicates: str) -> tuple[InteractionLog, int]:
    """Identical (user, item, timestamp) rows are an error, or dropped (first kept) with ``duplicates='drop'``."""
    if duplicates not in ("error", "drop"):
        raise ValueError(f"duplicates must be 'error' or 'drop', got {duplicates!r}")
    first_row: dict[tuple[str, str, int], int] = {}
    kept = InteractionLog(log.path)
    for i in range(len(log)):
        key = (log.users[i], log.items[i], log.timestamps[i])
        if key in first_row:
            if duplicates == "error":
                raise DataError(log.path, f"duplicate of row {first_row[key]} (user {key[0]!r}, item {key[1]!r}, "
                                          f"timestamp {key[2]}); pass duplicates='drop' to keep the first", log.rows[i])
            continue
        first_row[key] = log.rows[i]
        kept.append(log.users[i], log.items[i], log.timestamps[i], log.ratings[i], log.rows[i])
    return kept, len(log) - len(kept)


def k_core(log: InteractionLog, min_user: int, min_item: int) -> list[int]:
    """Indices of rows that survive iterative k-core filtering (users >= min_user, items >= min_item)."""
    alive = list(range(len(log)))
    while True:
        user_counts = Counter(log.users[i] for i in alive)
        item_counts = Counter(log.items[i] for i in alive)
        kept = [i for i in alive if user_counts[log.users[i]] >= min_user and item_counts[log.items[i]] >= min_item]
        if len(kept) == len(alive):
            return kept
        alive = kept


def _raw_id_order(raw_id: str) -> tuple[int, int | str]:
    """Numeric raw ids sort numerically (MovieLens), others lexicographically."""
    return (0, int(raw_id)) if raw_id.isdigit() else (1, raw_id)


def build_sequences(log: InteractionLog, rows: list[int]) -> tuple[list[UserSequence], list[str]]:
    """Chronological per-user sequences over re-indexed items; returns (sequences, raw item id per index-1)."""
    raw_items = sorted({log.items[i] for i in rows}, key=_raw_id_order)
    item_index = {raw: index + 1 for index, raw in enumerate(raw_items)}
    by_user: dict[str, list[int]] = defaultdict(list)
    for i in rows:
        by_user[log.users[i]].append(i)
    sequences = []
    for user in sorted(by_user, key=_raw_id_order):
        events = sorted(by_user[user], key=lambda i: log.timestamps[i])  # stable: ties keep file order
        sequences.append(UserSequence(user, [item_index[log.items[i]] for i in events],
                                      [log.ratings[i] for i in events], [log.timestamps[i] for i in events]))
    return sequences, raw_items


def liked(rating: float, threshold: float) -> bool:
    """Rating binarisation for pointwise tasks; implicit feedback (NaN) counts as liked."""
    return math.isnan(rating) or rating >= threshold
