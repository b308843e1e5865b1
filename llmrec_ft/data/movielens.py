"""MovieLens in GroupLens' raw formats: ML-100K (``u.data``/``u.item``) and ML-1M (``ratings.dat``/``movies.dat``).

Downloads go to the cache once (zip from GroupLens, as users of RecBole and the papers get it);
``path=`` points at an already extracted folder instead. GroupLens wrote these files in Latin-1, which is
the default here (``encoding`` overrides it); every other source defaults to UTF-8.
"""

from __future__ import annotations

import re
import urllib.request
import zipfile
from pathlib import Path

from llmrec_ft.assets import cache_dir
from llmrec_ft.data.files import iter_delimited
from llmrec_ft.data.interactions import InteractionLog, ItemInfo, describe_item, parse_rating, parse_timestamp
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


ML100K_DATA_COLUMNS = ["user id", "item id", "rating", "timestamp"]  # names from the ML-100K README
ML100K_ITEM_COLUMNS = ["movie id", "movie title", "release date", "video release date", "IMDb URL", *ML100K_GENRES]
ML1M_RATING_COLUMNS = ["UserID", "MovieID", "Rating", "Timestamp"]  # names from the ML-1M README
ML1M_MOVIE_COLUMNS = ["MovieID", "Title", "Genres"]
GROUPLENS_FILES = {"ml-100k": ("u.data", "u.item"), "ml-1m": ("ratings.dat", "movies.dat")}  # interactions, items
GROUPLENS_ENCODING = "latin-1"  # how GroupLens wrote u.item / movies.dat (e.g. "Misérables" is one 0xE9 byte)


def read_ml100k(folder: Path, encoding: str | None = None) -> tuple[InteractionLog, dict[str, ItemInfo], list[Path]]:
    data_path, item_path = (folder / name for name in GROUPLENS_FILES["ml-100k"])
    encoding = encoding or GROUPLENS_ENCODING
    log = InteractionLog(str(data_path), "item id", "s")
    for row, rec in iter_delimited(data_path, "\t", ML100K_DATA_COLUMNS, encoding):
        log.append(rec["user id"], rec["item id"], parse_timestamp(rec["timestamp"], str(data_path), row, "timestamp"),
                   parse_rating(rec["rating"], str(data_path), row, "rating"), row)
    items = {}
    for row, rec in iter_delimited(item_path, "|", ML100K_ITEM_COLUMNS, encoding):
        title, year = split_title_year(rec["movie title"])
        genres = [genre for genre in ML100K_GENRES if rec[genre] == "1"]
        items[rec["movie id"]] = describe_item(title, year, genres, path=str(item_path), row=row,
                                               title_field="movie title")
    return log, items, [data_path, item_path]


def read_ml1m(folder: Path, encoding: str | None = None) -> tuple[InteractionLog, dict[str, ItemInfo], list[Path]]:
    ratings_path, movies_path = (folder / name for name in GROUPLENS_FILES["ml-1m"])
    encoding = encoding or GROUPLENS_ENCODING
    log = InteractionLog(str(ratings_path), "MovieID", "s")
    for row, rec in iter_delimited(ratings_path, "::", ML1M_RATING_COLUMNS, encoding):
        log.append(rec["UserID"], rec["MovieID"], parse_timestamp(rec["Timestamp"], str(ratings_path), row, "Timestamp"),
                   parse_rating(rec["Rating"], str(ratings_path), row, "Rating"), row)
    items = {}
    for row, rec in iter_delimited(movies_path, "::", ML1M_MOVIE_COLUMNS, encoding):
        title, year = split_title_year(rec["Title"])
        items[rec["MovieID"]] = describe_item(title, year, rec["Genres"].split("|"), path=str(movies_path), row=row,
                                              title_field="Title")
    return log, items, [ratings_path, movies_path]
