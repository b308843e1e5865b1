"""Amazon reviews from local files: the 2018 release (McAuley lab, ``reviews.json[.gz]`` + ``meta.json[.gz]``)
and the 2023 release (``<Category>.jsonl[.gz]`` + ``meta_<Category>.jsonl[.gz]``).

2018 keys reviews by ``reviewerID``/``asin``/``unixReviewTime``/``overall``; 2023 by
``user_id``/``parent_asin``/``timestamp`` (milliseconds)/``rating``, and joins metadata on ``parent_asin``
(the product, not the colour/size variant), which is what the 2023 benchmarks do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmrec_ft.data.files import iter_json_lines, require_fields
from llmrec_ft.data.interactions import InteractionLog, ItemInfo, describe_item, parse_rating, parse_timestamp

FORMATS = {
    # release: (user, item, timestamp, rating, meta item key, milliseconds?)
    "amazon2018": ("reviewerID", "asin", "unixReviewTime", "overall", "asin", False),
    "amazon2023": ("user_id", "parent_asin", "timestamp", "rating", "parent_asin", True),
}


def _flat_categories(value: Any) -> list[str]:
    """2018 stores ``category`` as a list (older dumps: list of lists); 2023 ``categories`` as a list."""
    out: list[str] = []
    for entry in value or []:
        out.extend(_flat_categories(entry) if isinstance(entry, list) else [str(entry)])
    return out


def read_amazon(reviews_path: str | Path, meta_path: str | Path, release: str) -> tuple[InteractionLog, dict[str, ItemInfo], list[Path]]:
    user_key, item_key, time_key, rating_key, meta_key, milliseconds = FORMATS[release]
    log = InteractionLog(str(reviews_path))
    for row, obj in iter_json_lines(reviews_path):
        require_fields(obj, [user_key, item_key, time_key], reviews_path, row)
        timestamp = parse_timestamp(obj[time_key], str(reviews_path), row, time_key)
        rating = obj.get(rating_key)
        log.append(str(obj[user_key]), str(obj[item_key]), timestamp // 1000 if milliseconds else timestamp,
                   parse_rating(None if rating is None else str(rating), str(reviews_path), row, rating_key), row)
    items = {}
    for row, obj in iter_json_lines(meta_path):
        require_fields(obj, [meta_key], meta_path, row)
        title = str(obj.get("title") or obj[meta_key]).strip()
        categories = _flat_categories(obj.get("categories") or obj.get("category"))
        brand = obj.get("brand") or obj.get("store")
        items[str(obj[meta_key])] = describe_item(title, None, categories or None, f"Brand: {brand}" if brand else None)
    return log, items, [Path(reviews_path), Path(meta_path)]
