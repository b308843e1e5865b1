"""Amazon reviews from local files: the 2018 release (McAuley lab, ``reviews.json[.gz]`` + ``meta.json[.gz]``)
and the 2023 release (``<Category>.jsonl[.gz]`` + ``meta_<Category>.jsonl[.gz]``).

2018 keys reviews by ``reviewerID``/``asin``/``unixReviewTime`` (seconds)/``overall``; 2023 by
``user_id``/``parent_asin``/``timestamp`` (milliseconds, kept as milliseconds)/``rating``, and joins metadata on
``parent_asin`` (the product, not the colour/size variant), which is what the 2023 benchmarks do.

Item text: the ``title`` (required; see ``missing_text``), then categories (2018 ``category``, 2023
``categories``; null/blank entries dropped) and the brand (2018 ``brand``, 2023 ``store``), all HTML-cleaned.
"""

from __future__ import annotations

from pathlib import Path

from llmrec_ft.data.files import iter_json_lines
from llmrec_ft.data.interactions import InteractionLog, ItemInfo, describe_item, parse_rating, parse_timestamp
from llmrec_ft.data.text import clean_text

FORMATS = {
    # release: (user, item, timestamp, rating, meta item key, time unit)
    "amazon2018": ("reviewerID", "asin", "unixReviewTime", "overall", "asin", "s"),
    "amazon2023": ("user_id", "parent_asin", "timestamp", "rating", "parent_asin", "ms"),
}


def read_amazon(reviews_path: str | Path, meta_path: str | Path, release: str,
                encoding: str | None = None) -> tuple[InteractionLog, dict[str, ItemInfo], list[Path]]:
    user_key, item_key, time_key, rating_key, meta_key, time_unit = FORMATS[release]
    log = InteractionLog(str(reviews_path), item_key, time_unit)
    for row, obj in iter_json_lines(reviews_path, encoding, [user_key, item_key, time_key]):
        log.append(str(obj[user_key]), str(obj[item_key]), parse_timestamp(obj[time_key], str(reviews_path), row, time_key),
                   parse_rating(obj.get(rating_key), str(reviews_path), row, rating_key), row)
    items = {}
    for row, obj in iter_json_lines(meta_path, encoding, [meta_key]):
        brand = clean_text(obj.get("brand") or obj.get("store"))
        items[str(obj[meta_key])] = describe_item(obj.get("title"), None, obj.get("categories") or obj.get("category"),
                                                  f"Brand: {brand}" if brand else None,
                                                  path=str(meta_path), row=row, title_field="title")
    return log, items, [Path(reviews_path), Path(meta_path)]
