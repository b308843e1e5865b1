"""CoLLM's pre-processed data (zyang1580/CoLLM, ``collm-datasets/ml-1m.zip``): pointwise Yes/No rows, time split.

This is what CoLLM (arXiv 2310.19488) and SASRecLLM (arXiv 2507.05733, authors' code kechenkristin/RecLLM)
train and test on. Each of ``train``/``valid``/``test`` is one file with one row per (user, candidate):

====================  ===================================================================================
``uid``, ``iid``      int ids (items start at 1; 0 is padding in ``his``)
``label``             1 = liked (rating > 3), 0 = not
``timestamp``         unix seconds; the split is global by time (train, then valid, then test)
``his``, ``his_title`` the user's earlier *liked* items (ids, oldest first, ``0`` = padding) and their titles
``title``             the candidate's title
``not_cold``          1 = the candidate occurs in the training rows (warm), 0 = cold
``flag``              carried through, unused
====================  ===================================================================================

Formats: Parquet (``<split>.parquet``, what ``../shared/data/collm-ml-1m`` holds) or the original pickles
(``<split>.pkl``) read through :class:`AllowListUnpickler`, which rebuilds only pandas/numpy/pyarrow data
types and refuses every other global -- a pickle can otherwise run any code (``os.system``) on load, so a
plain ``pickle.load`` is never used.

:func:`build_collm_dataset` returns the toolkit's prepared layout, so every recipe reads it unchanged:

* ``collm_train`` / ``collm_valid`` / ``collm_test``: the pointwise rows (``user_id``, ``position`` = the
  row's 1-based index in its file, ``history`` = the liked history without padding, ``candidate``,
  ``label``, ``is_cold`` = ``not not_cold``, ``timestamp``); :mod:`llmrec_ft.train.pointwise_data` uses
  these as they are instead of cutting samples from sequences;
* ``train`` / ``valid`` / ``test``: leave-one-out sequences of each user's *liked training* items in time
  order, for pre-training the ID model (SASRec). Why liked items only: the ID model later reads ``his``,
  which holds liked items only (CoLLM feeds ``his`` to SASRec as ``sas_seq``), so it is trained on sequences
  of the same kind; disliked and valid/test-period interactions never reach it;
* ``items``: ids ``1..max iid`` with titles; ``is_cold`` = never a training candidate.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from llmrec_ft.data.interactions import DataError

SPLITS = ("train", "valid", "test")
COLUMNS = ("uid", "iid", "label", "timestamp", "his", "his_title", "title", "not_cold")
POINTWISE_PREFIX = "collm_"

# What pickled DataFrames of pandas 1.x-3.x / numpy 1.x-2.x refer to (found with pickletools on frames of
# CoLLM's dtypes: int, float, str, object columns of arrays and lists). Nothing here runs code beyond
# rebuilding arrays and frames.
ALLOWED_GLOBALS = frozenset({
    ("pandas", "DataFrame"), ("pandas.core.frame", "DataFrame"),
    ("pandas", "Index"), ("pandas", "RangeIndex"), ("pandas.core.indexes.base", "Index"),
    ("pandas.core.indexes.base", "_new_Index"), ("pandas.core.indexes.range", "RangeIndex"),
    ("pandas", "StringDtype"), ("pandas.core.arrays.string_", "StringDtype"),
    ("pandas.arrays", "ArrowStringArray"), ("pandas.arrays", "StringArray"),
    ("pandas.core.internals.managers", "BlockManager"), ("pandas.core.internals.blocks", "new_block"),
    ("pandas._libs.internals", "_unpickle_block"), ("pandas._libs.internals", "BlockPlacement"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("pyarrow.lib", "_restore_array"), ("pyarrow.lib", "py_buffer"), ("pyarrow.lib", "type_for_alias"),
    ("builtins", "slice"), ("builtins", "bytearray"), ("__builtin__", "slice"), ("__builtin__", "bytearray"),
    ("_codecs", "encode"),
})


class AllowListUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS`; anything else raises a
    :class:`~llmrec_ft.data.interactions.DataError` naming the file and the refused global."""

    def __init__(self, file, path: str):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise DataError(self.path, f"refusing to unpickle global {module}.{name}: only pandas/numpy data "
                                       "types are allowed (convert the file to Parquet if it needs more)")
        return super().find_class(module, name)


def load_pickled_frame(path: str | Path) -> pd.DataFrame:
    """A pickled ``pandas.DataFrame`` read through :class:`AllowListUnpickler`.

    Raises ``DataError`` for a missing file, a refused global, a corrupt pickle or a non-DataFrame."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "file not found")
    try:
        frame = AllowListUnpickler(io.BytesIO(path.read_bytes()), str(path)).load()
    except DataError:
        raise
    except Exception as err:  # truncated or foreign pickles fail in many ways; all are bad input
        raise DataError(str(path), f"not a readable pickle ({type(err).__name__}: {err})") from None
    if not isinstance(frame, pd.DataFrame):
        raise DataError(str(path), f"expected a pandas DataFrame, the pickle holds a {type(frame).__name__}")
    return frame


def read_split(folder: str | Path, split: str) -> tuple[pd.DataFrame, Path]:
    """``<folder>/<split>.parquet``, else ``<folder>/<split>.pkl``; validated (see :func:`validate_frame`)."""
    folder = Path(folder)
    parquet, pickled = folder / f"{split}.parquet", folder / f"{split}.pkl"
    if parquet.is_file():
        try:
            frame = pd.read_parquet(parquet)
        except Exception as err:
            raise DataError(str(parquet), f"not a readable Parquet file ({type(err).__name__}: {err})") from None
        path = parquet
    elif pickled.is_file():
        frame, path = load_pickled_frame(pickled), pickled
    else:
        raise DataError(str(folder), f"no {split}.parquet or {split}.pkl in this folder")
    validate_frame(frame, str(path))
    return frame, path


def _first_bad(mask: np.ndarray) -> int | None:
    bad = np.flatnonzero(mask)
    return int(bad[0]) + 1 if len(bad) else None  # 1-based row


def validate_frame(frame: pd.DataFrame, path: str) -> None:
    """Check columns, types and values; a ``DataError`` names the file, the 1-based row and the field."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(path, f"missing column(s) {missing}; found {list(frame.columns)}")
    if frame.empty:
        raise DataError(path, "no rows")
    for name in ("uid", "iid", "label", "timestamp", "not_cold"):
        values = frame[name]
        if not pd.api.types.is_integer_dtype(values):
            numeric = pd.to_numeric(values, errors="coerce")
            row = _first_bad((numeric.isna() | (numeric != numeric.round())).to_numpy())
            if row is not None:
                raise DataError(path, f"expected an integer, got {values.iloc[row - 1]!r}", row, name)
    checks = {"iid": frame["iid"].to_numpy() < 1, "uid": frame["uid"].to_numpy() < 0,
              "label": ~np.isin(frame["label"].to_numpy(), (0, 1)),
              "not_cold": ~np.isin(frame["not_cold"].to_numpy(), (0, 1))}
    for name, mask in checks.items():
        row = _first_bad(mask)
        if row is not None:
            raise DataError(path, f"invalid value {frame[name].iloc[row - 1]!r}", row, name)
    for row, (his, titles, title) in enumerate(zip(frame["his"], frame["his_title"], frame["title"]), start=1):
        if not isinstance(title, str):
            raise DataError(path, f"expected a string, got {type(title).__name__}", row, "title")
        if not hasattr(his, "__len__") or not hasattr(titles, "__len__"):
            raise DataError(path, "expected a list", row, "his" if not hasattr(his, "__len__") else "his_title")
        if len(his) != len(titles):
            raise DataError(path, f"{len(his)} ids but {len(titles)} titles", row, "his_title")
        ids = np.asarray(his)
        if len(ids) and (ids.dtype.kind not in "iu" or (ids < 0).any()):
            raise DataError(path, f"history ids must be integers >= 0 (0 = padding), got {list(his)[:5]}...",
                            row, "his")


def _pointwise_rows(frame: pd.DataFrame) -> dict[str, list]:
    histories = [[int(i) for i in his if i] for his in frame["his"]]
    return {"user_id": frame["uid"].astype(int).tolist(), "position": list(range(1, len(frame) + 1)),
            "history": histories, "history_liked": [[True] * len(h) for h in histories],
            "candidate": frame["iid"].astype(int).tolist(), "label": frame["label"].astype(int).tolist(),
            "is_cold": (frame["not_cold"].astype(int) == 0).tolist(),
            "timestamp": frame["timestamp"].astype(int).tolist()}


def _item_titles(frames: dict[str, tuple[pd.DataFrame, Path]]) -> dict[int, str]:
    """Item id -> title from candidates and histories; one id with two titles is a DataError."""
    titles: dict[int, tuple[str, str, int, str]] = {}  # id -> (title, file, row, field)
    for frame, path in frames.values():
        for row, (iid, title, his, his_titles) in enumerate(
                zip(frame["iid"], frame["title"], frame["his"], frame["his_title"]), start=1):
            pairs = [(int(iid), title, "title"), *((int(i), t, "his_title") for i, t in zip(his, his_titles) if i)]
            for item, text, field in pairs:
                seen = titles.setdefault(item, (text, str(path), row, field))
                if seen[0] != text:
                    raise DataError(str(path), f"item {item} is titled {text!r} here but {seen[0]!r} in "
                                               f"{seen[1]}, row {seen[2]}", row, field)
    return {item: value[0] for item, value in titles.items()}


def _sequence_splits(train: pd.DataFrame, is_cold: list[bool]) -> dict[str, list[dict]]:
    """Leave-one-out splits of each user's liked training items (users with fewer than 3 are left out)."""
    liked = train[train["label"] == 1].sort_values(["uid", "timestamp", "iid"], kind="stable")
    out = {"train": [], "valid": [], "test": []}
    for uid, group in liked.groupby("uid", sort=True):
        items = group["iid"].astype(int).tolist()
        if len(items) < 3:
            continue
        stamps = group["timestamp"].astype(int).tolist()
        out["train"].append({"user_id": int(uid), "raw_user_id": str(uid), "items": items[:-2],
                             "ratings": [1.0] * (len(items) - 2), "liked": [True] * (len(items) - 2),
                             "timestamps": stamps[:-2]})
        for split, cut in (("valid", -2), ("test", -1)):
            history = items[:cut]
            out[split].append({"user_id": int(uid), "history": history, "history_ratings": [1.0] * len(history),
                               "history_liked": [True] * len(history), "target": items[cut],
                               "target_rating": 1.0, "target_liked": True, "target_is_cold": is_cold[items[cut]]})
    if not out["train"]:
        raise DataError("train", "no user has 3 or more liked training items: nothing to pre-train SASRec on")
    return out


def build_collm_dataset(folder: str | Path) -> tuple[datasets.DatasetDict, dict]:
    """Read ``train``/``valid``/``test`` from ``folder`` (Parquet or pickles) into the layout of the module
    docstring; returns the DatasetDict and a manifest fragment (files, counts). Raises ``DataError``."""
    frames = {split: read_split(folder, split) for split in SPLITS}
    titles = _item_titles(frames)
    num_items = max(titles)
    train_frame = frames["train"][0]
    train_count = np.bincount(train_frame["iid"].to_numpy(dtype=np.int64), minlength=num_items + 1)
    is_cold = (train_count == 0).tolist()
    sequences = _sequence_splits(train_frame, is_cold)
    items = {"item_id": list(range(1, num_items + 1)), "raw_item_id": [str(i) for i in range(1, num_items + 1)],
             "title": [titles.get(i, "") for i in range(1, num_items + 1)],
             "text": [titles.get(i, "") for i in range(1, num_items + 1)],
             "train_count": train_count[1:].tolist(), "is_cold": is_cold[1:]}
    dataset = datasets.DatasetDict({
        **{split: datasets.Dataset.from_list(rows) for split, rows in sequences.items()},
        "items": datasets.Dataset.from_dict(items),
        **{POINTWISE_PREFIX + split: datasets.Dataset.from_dict(_pointwise_rows(frame))
           for split, (frame, _) in frames.items()}})
    counts = {split: {"rows": len(frame), "users": int(frame["uid"].nunique()),
                      "label_mean": float(frame["label"].mean()), "not_cold_mean": float(frame["not_cold"].mean())}
              for split, (frame, _) in frames.items()}
    counts["items"] = num_items
    counts["sasrec_users"] = len(sequences["train"])
    return dataset, {"files": [path for _, path in frames.values()], "counts": counts}


def has_pointwise_splits(ds: datasets.DatasetDict) -> bool:
    """Whether a prepared dataset carries CoLLM-style pointwise rows (``collm_train`` etc.)."""
    return all(POINTWISE_PREFIX + split in ds for split in SPLITS)
