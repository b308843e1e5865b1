"""MovieLens in GroupLens' raw formats: ML-100K (``u.data``/``u.item``) and ML-1M (``ratings.dat``/``movies.dat``).

Downloads go to the cache once (zip from GroupLens, as users of RecBole and the papers get it);
``path=`` points at an already extracted folder instead.
"""

from __future__ import annotations

import re
import urllib.request
import zipfile
from pathlib import Path

from llmrec_ft.assets import cache_dir
from llmrec_ft.data.files import iter_lines
from llmrec_ft.data.interactions import DataError, InteractionLog, ItemInfo, describe_item, parse_rating, parse_timestamp
from llmrec_ft.io import atomic_path

GROUPLENS_URLS = {
    "ml-100k": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
    "ml-1m": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
}
ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western"]
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")


def download_grouplens(name: str) -> Path:
    """Fetch and extract a GroupLens zip into the cache; returns the extracted folder."""
    folder = cache_dir() / "raw" / name
    if folder.is_dir():
        return folder
    zip_path = cache_dir() / "raw" / f"{name}.zip"
    with atomic_path(zip_path) as tmp:
        urllib.request.urlretrieve(GROUPLENS_URLS[name], tmp)
    with zipfile.ZipFile(zip_path) as archive, atomic_path(folder) as tmp:
        archive.extractall(tmp.parent / "unzipped")
        (tmp.parent / "unzipped" / name).rename(tmp)
    return folder


def split_title_year(raw_title: str) -> tuple[str, str | None]:
    """'Toy Story (1995)' -> ('Toy Story', '1995')."""
    match = _TITLE_YEAR.match(raw_title)
    return (match["title"], match["year"]) if match else (raw_title.strip(), None)


def read_ml100k(folder: Path) -> tuple[InteractionLog, dict[str, ItemInfo], list[Path]]:
    data_path, item_path = folder / "u.data", folder / "u.item"
    log = InteractionLog(str(data_path))
    for row, line in iter_lines(data_path):
        parts = line.split("\t")
        if len(parts) != 4:
            raise DataError(str(data_path), f"expected 4 tab-separated fields (user, item, rating, timestamp), got {len(parts)}", row)
        user, item, rating, timestamp = parts
        log.append(user, item, parse_timestamp(timestamp, str(data_path), row, "timestamp"),
                   parse_rating(rating, str(data_path), row, "rating"), row)
    items = {}
    for row, line in iter_lines(item_path, encoding="latin-1"):
        parts = line.split("|")
        if len(parts) != 5 + len(ML100K_GENRES):
            raise DataError(str(item_path), f"expected {5 + len(ML100K_GENRES)} '|'-separated fields, got {len(parts)}", row)
        title, year = split_title_year(parts[1])
        genres = [genre for genre, flag in zip(ML100K_GENRES, parts[5:]) if flag == "1"]
        items[parts[0]] = describe_item(title, year, genres)
    return log, items, [data_path, item_path]


def read_ml1m(folder: Path) -> tuple[InteractionLog, dict[str, ItemInfo], list[Path]]:
    ratings_path, movies_path = folder / "ratings.dat", folder / "movies.dat"
    log = InteractionLog(str(ratings_path))
    for row, line in iter_lines(ratings_path):
        parts = line.split("::")
        if len(parts) != 4:
            raise DataError(str(ratings_path), f"expected 'UserID::MovieID::Rating::Timestamp', got {len(parts)} fields", row)
        user, item, rating, timestamp = parts
        log.append(user, item, parse_timestamp(timestamp, str(ratings_path), row, "Timestamp"),
                   parse_rating(rating, str(ratings_path), row, "Rating"), row)
    items = {}
    for row, line in iter_lines(movies_path, encoding="latin-1"):
        parts = line.split("::")
        if len(parts) != 3:
            raise DataError(str(movies_path), f"expected 'MovieID::Title::Genres', got {len(parts)} fields", row)
        title, year = split_title_year(parts[1])
        items[parts[0]] = describe_item(title, year, [g for g in parts[2].split("|") if g])
    return log, items, [ratings_path, movies_path]
