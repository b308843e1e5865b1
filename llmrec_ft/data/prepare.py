"""``prepare_dataset``: source -> validated, filtered, leave-one-out ``datasets.DatasetDict`` on disk.

The output folder holds the DatasetDict (splits ``train``, ``valid``, ``test``, ``items``) and a
``manifest.json`` (source file hashes, parameters, counts). It is written atomically, so a bad row
found anywhere leaves nothing behind, and cached by a hash of the config and the source files.

Steps, each counted in ``manifest["counts"]``: parse (``raw_interactions``), drop interactions with items
missing from the item file (``unknown_item_interactions_dropped``, only with ``unknown_items=drop``), drop
items without a usable title (``items_without_text_dropped`` and their ``..._interactions_dropped``, only with
``missing_text=drop``), drop identical rows (``duplicates_dropped``), k-core (``short_users_dropped``,
``k_core_items_dropped``, ``k_core_interactions_dropped``); then ``titles_cleaned`` says how many of the
final items had their title changed by the HTML/whitespace normaliser (:mod:`llmrec_ft.data.text`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from filelock import FileLock

from llmrec_ft.assets import cache_dir
from llmrec_ft.data.amazon import FORMATS as AMAZON_FORMATS
from llmrec_ft.data.amazon import read_amazon
from llmrec_ft.data.collm import build_collm_dataset
from llmrec_ft.data.generic import read_generic
from llmrec_ft.data.sequences import read_sequences
from llmrec_ft.data.interactions import DataError
from llmrec_ft.data.movielens import GROUPLENS_FILES, download_grouplens, read_ml1m, read_ml100k
from llmrec_ft.data.files import resolve_encoding
from llmrec_ft.data.preprocess import (MIN_SEQUENCE_LENGTH, build_sequences, check_duplicates, check_item_text,
                                       check_items_known, check_policy, k_core, liked)
from llmrec_ft.data.recbole_atomic import embedded_ml100k, read_atomic
from llmrec_ft.io import atomic_path, write_json

logger = logging.getLogger(__name__)
FORMAT_VERSION = 2  # 2: timestamps at the source's resolution (Amazon 2023 in ms), cleaned item text
DATASETS = ("ml-100k", "ml-100k-grouplens", "ml-1m", "recbole", "amazon2018", "amazon2023", "generic", "collm", "sequences")
# What a source reads from ``data_path`` / ``item_path``, in the names of the download, so that a folder given for a
# file (or a file for a folder) is an error that says what to pass instead.
FOLDER_CONTENTS = {"ml-100k-grouplens": GROUPLENS_FILES["ml-100k"], "ml-1m": GROUPLENS_FILES["ml-1m"],
                   "recbole": ("<folder name>.inter", "<folder name>.item"),
                   "collm": ("train, valid and test .parquet (or .pkl)",)}
FILE_CONTENTS = {  # dataset: (data_path, item_path)
    "amazon2018": ("the reviews file (e.g. reviews.json.gz, one JSON review a line)",
                   "the metadata file (e.g. meta.json.gz)"),
    "amazon2023": ("the reviews file (<Category>.jsonl[.gz])", "the metadata file (meta_<Category>.jsonl[.gz])"),
    "generic": ("the interactions file (CSV or JSON lines with user, item, timestamp[, rating])",
                "the item file (CSV or JSON lines with item, title[, text])"),
    "sequences": ("the sequence file (a line per user: user item item ...)", "the item-text TSV"),
}


@dataclass
class DataConfig:
    """Which data, and how to preprocess it. Field names double as recipe YAML keys / CLI flags."""

    dataset: str = field(default="ml-100k", metadata={"help": f"One of {DATASETS}. 'ml-100k' is the embedded copy."})
    data_path: str | None = field(default=None, metadata={
        "help": "Local source: folder (ml-100k-grouplens/ml-1m raw files, recbole atomic files) or interactions file "
                "(amazon*, generic), folder of CoLLM's train/valid/test .parquet or .pkl (collm). "
                "GroupLens datasets are downloaded when omitted."})
    item_path: str | None = field(default=None, metadata={"help": "Item file (amazon meta, generic items)."})
    min_user_interactions: int = field(default=5, metadata={"help": "k-core: users with fewer are dropped (>= 3)."})
    min_item_interactions: int = field(default=0, metadata={"help": "k-core: items with fewer are dropped."})
    like_threshold: float = field(default=4.0, metadata={"help": "rating >= this is a like (pointwise tasks)."})
    cold_item_threshold: int = field(default=5, metadata={"help": "Items with fewer training interactions are cold."})
    duplicates: str = field(default="error", metadata={"help": "'error' or 'drop' identical (user,item,time) rows."})
    unknown_items: str = field(default="error", metadata={"help": "'error' or 'drop' interactions of uncatalogued items."})
    missing_text: str = field(default="error", metadata={
        "help": "'error' or 'drop' (with their interactions) items whose title is missing, null or blank after "
                "HTML cleaning."})
    encoding: str | None = field(default=None, metadata={
        "help": "Text encoding of the source files (e.g. 'latin-1', 'cp1252'). Default: UTF-8, a byte-order mark "
                "accepted; GroupLens MovieLens raw files (ml-100k-grouplens, ml-1m): Latin-1."})

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """``ValueError`` for a bad option, before any file is read (also run by ``build_dataset``, since fields
        may be set after construction)."""
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {DATASETS}")
        if self.min_user_interactions < MIN_SEQUENCE_LENGTH:
            raise ValueError(f"min_user_interactions={self.min_user_interactions}, but leave-one-out needs at least "
                             f"{MIN_SEQUENCE_LENGTH} interactions per user (one train, one validation, one test item)")
        if self.min_item_interactions < 0:
            raise ValueError(f"min_item_interactions={self.min_item_interactions} must be >= 0")
        for name in ("duplicates", "unknown_items", "missing_text"):
            check_policy(name, getattr(self, name))
        if self.encoding is not None:
            resolve_encoding(self.encoding)


def _read_source(config: DataConfig):
    name, encoding = config.dataset, config.encoding
    if name == "ml-100k":
        return read_atomic(embedded_ml100k(), "ml-100k", encoding)
    if name in ("ml-100k-grouplens", "ml-1m"):
        folder = Path(config.data_path) if config.data_path else download_grouplens(name.removesuffix("-grouplens"))
        return read_ml100k(folder, encoding) if name == "ml-100k-grouplens" else read_ml1m(folder, encoding)
    if name == "recbole":
        return read_atomic(_required(config, "data_path"), encoding=encoding)
    if name in AMAZON_FORMATS:
        return read_amazon(_required(config, "data_path"), _required(config, "item_path"), name, encoding)
    if name == "generic":
        return read_generic(_required(config, "data_path"), _required(config, "item_path"), encoding)
    if name == "sequences":
        return read_sequences(_required(config, "data_path"), _required(config, "item_path"), encoding)
    raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")


def check_source_paths(config: DataConfig) -> None:
    """``DataError`` before any parsing when ``data_path``/``item_path`` is a folder where the source reads a file,
    a file where it reads a folder, or a GroupLens folder without its files; the message says what to pass."""
    if config.dataset in FOLDER_CONTENTS and config.data_path:
        _check_source_folder(Path(config.data_path), config.dataset)
    for name, expected in zip(("data_path", "item_path"), FILE_CONTENTS.get(config.dataset, ())):
        value = getattr(config, name)
        if value and Path(value).is_dir():
            files = sorted(p.name for p in Path(value).iterdir() if p.is_file())
            held = f"it holds {', '.join(files[:8])}{' ...' if len(files) > 8 else ''}" if files else "it holds no files"
            raise DataError(value, f"is a folder, but dataset {config.dataset!r} reads {name} as {expected}: pass "
                                   f"that file ({held})")


def _check_source_folder(folder: Path, dataset: str) -> None:
    contents = FOLDER_CONTENTS[dataset]
    wanted = f"dataset {dataset!r} reads data_path as a folder holding {' and '.join(contents)}"
    if folder.is_file():
        raise DataError(str(folder), f"is a file, but {wanted}: pass its folder ({folder.parent})")
    if dataset not in ("ml-100k-grouplens", "ml-1m") or not folder.is_dir():
        return  # the other readers name what they miss; a missing folder is "file not found" there
    missing = [name for name in contents if not (folder / name).is_file()]
    if missing:
        inner = next((sub for sub in sorted(folder.iterdir()) if (sub / missing[0]).is_file()), None)
        raise DataError(str(folder), f"no {' or '.join(missing)} in this folder; {wanted}"
                                     + (f" (found in {inner}: pass that folder)" if inner else ""))


def _required(config: DataConfig, name: str) -> str:
    value = getattr(config, name)
    if not value:
        raise ValueError(f"dataset {config.dataset!r} needs {name}=...")
    return value


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_dataset(config: DataConfig) -> tuple[datasets.DatasetDict, dict]:
    """Parse, validate and split; returns the DatasetDict and its manifest (nothing is written)."""
    config.validate()
    check_source_paths(config)
    if config.dataset == "collm":  # pointwise rows with their own time split (llmrec_ft/data/collm.py)
        dataset, info = build_collm_dataset(_required(config, "data_path"))
        return dataset, {"format_version": FORMAT_VERSION, "config": dataclasses.asdict(config),
                         "source_files": {str(p): _file_sha256(p) for p in info["files"]},
                         "counts": info["counts"], "has_ratings": False}
    log, catalog, files = _read_source(config)
    raw_count = len(log)
    log, unknown_dropped = check_items_known(log, catalog, str(files[-1]), config.unknown_items)
    log, textless_items, textless_interactions = check_item_text(log, catalog, config.missing_text)
    log, dropped_duplicates = check_duplicates(log, config.duplicates)
    rows = k_core(log, config.min_user_interactions, config.min_item_interactions)
    if not rows:
        raise DataError(log.path, f"no interactions survive the {config.min_user_interactions}/"
                                  f"{config.min_item_interactions}-core filter ({len(log)} interactions of "
                                  f"{len(set(log.users))} users entered it, after {unknown_dropped + textless_interactions}"
                                  f" dropped for unknown items or items without text)")
    sequences, raw_items = build_sequences(log, rows)
    if any(isinstance(t, float) for seq in sequences for t in seq.timestamps):  # one column type for Arrow
        for seq in sequences:
            seq.timestamps = [float(t) for t in seq.timestamps]

    train_count = [0] * (len(raw_items) + 1)
    train, valid, test = [], [], []
    for user_id, seq in enumerate(sequences):
        likes = [liked(r, config.like_threshold) for r in seq.ratings]
        for item in seq.items[:-2]:
            train_count[item] += 1
        train.append({"user_id": user_id, "raw_user_id": seq.raw_user_id, "items": seq.items[:-2],
                      "ratings": seq.ratings[:-2], "liked": likes[:-2], "timestamps": seq.timestamps[:-2]})
        for split, cut in ((valid, -2), (test, -1)):
            split.append({"user_id": user_id, "history": seq.items[:cut], "history_ratings": seq.ratings[:cut],
                          "history_liked": likes[:cut], "target": seq.items[cut], "target_rating": seq.ratings[cut],
                          "target_liked": likes[cut]})
    is_cold = [train_count[i] < config.cold_item_threshold for i in range(len(train_count))]
    for split in (valid, test):
        for row in split:
            row["target_is_cold"] = is_cold[row["target"]]
    items = {"item_id": list(range(1, len(raw_items) + 1)), "raw_item_id": raw_items,
             "title": [catalog[r].title for r in raw_items], "text": [catalog[r].text for r in raw_items],
             "train_count": train_count[1:], "is_cold": is_cold[1:]}
    dataset = datasets.DatasetDict({
        "train": datasets.Dataset.from_list(train), "valid": datasets.Dataset.from_list(valid),
        "test": datasets.Dataset.from_list(test), "items": datasets.Dataset.from_dict(items)})
    has_ratings = any(r == r for seq in sequences for r in seq.ratings)  # NaN != NaN
    manifest = {
        "format_version": FORMAT_VERSION, "config": dataclasses.asdict(config),
        "source_files": {str(p): _file_sha256(p) for p in files},
        "counts": {"raw_interactions": raw_count, "unknown_item_interactions_dropped": unknown_dropped,
                   "items_without_text_dropped": textless_items,
                   "items_without_text_interactions_dropped": textless_interactions,
                   "duplicates_dropped": dropped_duplicates,
                   "short_users_dropped": len(set(log.users)) - len(sequences),
                   "k_core_items_dropped": len(set(log.items)) - len(raw_items),
                   "k_core_interactions_dropped": len(log) - len(rows),
                   "titles_cleaned": sum(catalog[r].title_cleaned for r in raw_items),
                   "interactions": len(rows), "users": len(sequences), "items": len(raw_items),
                   "cold_items": sum(is_cold[1:]), "cold_test_targets": sum(r["target_is_cold"] for r in test)},
        "timestamp_unit": log.time_unit,
        "has_ratings": has_ratings,
    }
    return dataset, manifest


def default_output_dir(config: DataConfig) -> Path:
    key = hashlib.sha256(json.dumps([FORMAT_VERSION, dataclasses.asdict(config)], sort_keys=True).encode()).hexdigest()
    return cache_dir() / "datasets" / f"{config.dataset}-{key[:12]}"


def prepare_dataset(config: DataConfig | None = None, output_dir: str | Path | None = None,
                    overwrite: bool = False) -> datasets.DatasetDict:
    """Build (or load the cached) prepared dataset; written atomically with ``manifest.json``.

    An existing folder is reused only if its manifest records the same format, options and source files
    (sha256): a stale cached copy (no ``output_dir``) is rebuilt, and a stale ``output_dir`` is a ``DataError``
    asking for ``overwrite`` -- never silently returned.

    Processes that prepare the same folder at once (seeds run side by side on one machine) take turns through
    a file lock beside it (``<folder>.lock``): the first builds, the others then load its copy. Without it each
    rebuilt and replaced the folder while another process was already writing ``datasets`` map caches inside
    it, which failed with ``FileNotFoundError`` (seen on a GPU machine, session 6)."""
    config = config or DataConfig()
    explicit = output_dir is not None
    output_dir = Path(output_dir) if explicit else default_output_dir(config)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(output_dir.resolve().with_name(output_dir.resolve().name + ".lock"))):
        if (output_dir / "manifest.json").exists() and not overwrite:
            changed = _changed_since_built(output_dir, config)
            if not changed:
                return load_prepared(output_dir)
            if explicit:
                raise DataError(str(output_dir / "manifest.json"), f"this prepared dataset was built with other "
                                f"{', '.join(changed)}; pass overwrite=True (--overwrite) or choose another folder")
            logger.warning("%s was built with other %s; rebuilding it", output_dir, ", ".join(changed))
        dataset, manifest = build_dataset(config)
        with atomic_path(output_dir) as tmp:
            datasets.disable_progress_bars()
            try:
                dataset.save_to_disk(str(tmp))
            finally:
                datasets.enable_progress_bars()
            write_json(tmp / "manifest.json", manifest)
        return load_prepared(output_dir)


def _changed_since_built(output_dir: Path, config: DataConfig) -> list[str]:
    """What differs between ``config`` (and the source files' contents now) and what the folder was built from."""
    manifest = load_manifest(output_dir)
    built = manifest.get("config", {})
    wanted = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples -> lists, as the manifest stores them
    changed = sorted(key for key in wanted.keys() | built.keys() if wanted.get(key) != built.get(key))
    if manifest.get("format_version") != FORMAT_VERSION:
        changed.append("format_version")
    changed += [f"content of {source}" for source, digest in manifest.get("source_files", {}).items()
                if Path(source).exists() and _file_sha256(Path(source)) != digest]
    return changed


def load_prepared(path: str | Path) -> datasets.DatasetDict:
    return datasets.load_from_disk(str(path))


def load_manifest(path: str | Path) -> dict:
    return json.loads((Path(path) / "manifest.json").read_text())


def num_items(dataset: datasets.DatasetDict) -> int:
    """Catalog size N; valid item ids are 1..N and 0 is padding."""
    return len(dataset["items"])


def item_texts(dataset: datasets.DatasetDict) -> list[str]:
    """Each item's text in id order: entry ``i`` is item id ``i + 1``, the row order of text-embedding tables.
    Raises ``ValueError`` when the items split is not ids 1..N in order or an item's text is empty."""
    items = dataset["items"]
    ids = items["item_id"]
    if ids != list(range(1, len(ids) + 1)):
        raise ValueError("items split: item_id must be 1..num_items in order")
    empty = next((row for row, text in enumerate(items["text"], start=1) if not text or not text.strip()), None)
    if empty is not None:
        raise ValueError(f"items split, row {empty} (item_id {ids[empty - 1]}): the text is empty")
    return items["text"]
