"""From a raw interaction log to leave-one-out sequences.

The protocol is the one SASRec, RecBole (``LS``/leave-one-out, ``TO`` order) and the LLM-rec papers use:
each user's interactions sorted by time, the last item is the test target, the second last the validation
target, everything before is training. Items are re-indexed ``1..N`` (0 is padding) in the order of their raw
ids, users ``0..U-1``.

Time: timestamps are compared at the file's own resolution (Amazon 2023 milliseconds stay milliseconds), and
equal timestamps are ordered by their row in the interaction file (earlier row first) -- the order the source
logged them, which is also what a stable sort of the file gives (SASRec's and RecBole's preprocessing). Two
rows are duplicates only if user, item and timestamp are all identical.
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
    timestamps: list[int | float]


POLICIES = ("error", "drop")


def check_policy(name: str, value: str) -> None:
    """``ValueError`` unless ``value`` is ``'error'`` or ``'drop'`` (the choices of every data-quality option)."""
    if value not in POLICIES:
        raise ValueError(f"{name} must be 'error' or 'drop', got {value!r}")


def check_items_known(log: InteractionLog, items: dict[str, ItemInfo], item_file: str,
                      unknown_items: str) -> tuple[InteractionLog, int]:
    """Every interacted item must be in the catalog; ``unknown_items='drop'`` drops those rows instead.
    Returns the kept rows and how many were dropped."""
    check_policy("unknown_items", unknown_items)
    kept = log.empty_like()
    for i, item in enumerate(log.items):
        if item in items:
            log.copy_row(i, kept)
        elif unknown_items == "error":
            raise DataError(log.path, f"item id {item!r} is not in the item file {item_file}; pass unknown_items=drop "
                                      f"to drop interactions with uncatalogued items", log.rows[i], log.item_field)
    if not len(kept):
        raise DataError(log.path, "no interactions left (empty file, or no item matched the item file)")
    return kept, len(log) - len(kept)


def check_item_text(log: InteractionLog, items: dict[str, ItemInfo],
                    missing_text: str) -> tuple[InteractionLog, int, int]:
    """Every interacted item needs a usable title (not missing, null, blank or empty after HTML cleaning).

    ``missing_text='error'``: a DataError naming the item file, the item's row and the title field (the first
    such item in that file). ``'drop'``: those items and all their interactions are dropped. Items nobody
    interacted with are not checked: they never reach the dataset. Returns ``(kept log, items dropped,
    interactions dropped)``."""
    check_policy("missing_text", missing_text)
    without_text = {item for item in set(log.items) if not items[item].has_text}
    if without_text and missing_text == "error":
        first = min(without_text, key=lambda item: (items[item].row or 0, item))
        info = items[first]
        raise DataError(info.path, f"item {first!r} has no usable title (missing, null, blank or empty after HTML "
                                   f"cleaning); pass missing_text=drop to drop such items and their interactions",
                        info.row, info.title_field)
    kept = log.empty_like()
    for i, item in enumerate(log.items):
        if item not in without_text:
            log.copy_row(i, kept)
    if not len(kept):
        raise DataError(log.path, "no interactions left: no interacted item has a usable title")
    return kept, len(without_text), len(log) - len(kept)


def check_duplicates(log: InteractionLog, duplicates: str) -> tuple[InteractionLog, int]:
    """Identical (user, item, timestamp) rows are an error, or dropped (first kept) with ``duplicates='drop'``.
    Timestamps compare at the file's resolution, so two reviews 500 ms apart are not duplicates."""
    check_policy("duplicates", duplicates)
    first_row: dict[tuple[str, str, int | float], int] = {}
    kept = log.empty_like()
    for i in range(len(log)):
        key = (log.users[i], log.items[i], log.timestamps[i])
        if key in first_row:
            if duplicates == "error":
                raise DataError(log.path, f"duplicate of row {first_row[key]} (user {key[0]!r}, item {key[1]!r}, "
                                          f"timestamp {key[2]}); pass duplicates=drop to keep the first", log.rows[i])
            continue
        first_row[key] = log.rows[i]
        log.copy_row(i, kept)
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
        events = sorted(by_user[user], key=lambda i: (log.timestamps[i], log.rows[i]))  # ties: file row order
        sequences.append(UserSequence(user, [item_index[log.items[i]] for i in events],
                                      [log.ratings[i] for i in events], [log.timestamps[i] for i in events]))
    return sequences, raw_items


def liked(rating: float, threshold: float) -> bool:
    """Rating binarisation for pointwise tasks; implicit feedback (NaN) counts as liked."""
    return math.isnan(rating) or rating >= threshold
