"""Data pipeline: every source format parses to the same sequences; bad input names file and row."""

import gzip
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llmrec_ft.data import DataConfig, DataError, build_dataset, load_manifest, num_items, prepare_dataset

FIXTURES = Path(__file__).parent / "fixtures"

SOURCES = {
    "ml-100k-grouplens": dict(data_path=str(FIXTURES / "ml-100k")),
    "ml-1m": dict(data_path=str(FIXTURES / "ml-1m")),
    "recbole": dict(data_path=str(FIXTURES / "recbole" / "tiny")),
    "amazon2018": dict(data_path=str(FIXTURES / "amazon2018" / "reviews.json.gz"),
                       item_path=str(FIXTURES / "amazon2018" / "meta.json")),
    "amazon2023": dict(data_path=str(FIXTURES / "amazon2023" / "Movies_and_TV.jsonl"),
                       item_path=str(FIXTURES / "amazon2023" / "meta_Movies_and_TV.jsonl.gz")),
    "generic": dict(data_path=str(FIXTURES / "generic" / "interactions.csv"),
                    item_path=str(FIXTURES / "generic" / "items.csv")),
}


def _config(name, **overrides):
    return DataConfig(dataset=name, **{**SOURCES.get(name, {}), **overrides})


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_format_gives_the_same_sequences(name):
    """All fixtures encode the same 33 events, so every parser must produce identical item sequences."""
    reference, _ = build_dataset(_config("ml-100k-grouplens"))
    dataset, manifest = build_dataset(_config(name))
    assert manifest["counts"]["interactions"] == 33
    assert dataset["train"]["items"] == reference["train"]["items"]
    assert dataset["test"]["target"] == reference["test"]["target"]
    assert dataset["items"]["title"][0] == "Toy Story"


def test_leave_one_out_split_is_chronological():
    dataset, _ = build_dataset(_config("ml-1m"))
    ratings = [line.split("::") for line in (FIXTURES / "ml-1m" / "ratings.dat").read_text().splitlines()]
    user1 = sorted((int(ts), item) for user, item, _, ts in ratings if user == "1")
    raw_ids = dataset["items"]["raw_item_id"]
    sequence = [raw_ids[i - 1] for i in dataset["train"][0]["items"]]
    assert sequence + [raw_ids[dataset["valid"][0]["target"] - 1], raw_ids[dataset["test"][0]["target"] - 1]] \
        == [item for _, item in user1]
    assert dataset["test"][0]["history"] == dataset["valid"][0]["history"] + [dataset["valid"][0]["target"]]


def test_item_text_and_binarised_ratings():
    dataset, manifest = build_dataset(_config("ml-100k-grouplens"))
    assert dataset["items"][0]["text"].startswith("Toy Story (1995). Genres: ")
    row = dataset["train"][0]
    assert row["liked"] == [r >= 4 for r in row["ratings"]]
    assert manifest["has_ratings"]


def test_implicit_feedback_counts_as_liked():
    dataset, manifest = build_dataset(DataConfig(dataset="generic", data_path=str(FIXTURES / "generic" / "interactions.jsonl"),
                                                 item_path=str(FIXTURES / "generic" / "items.jsonl")))
    assert not manifest["has_ratings"]
    assert all(math.isnan(r) for r in dataset["train"][0]["ratings"])
    assert all(dataset["train"][0]["liked"])


def test_k_core_is_iterative(tmp_path):
    """u3 loses its rare item (item 2-core), drops below the user 3-core, and takes i4 down with it."""
    rows = ["u1,i1,1", "u1,i2,2", "u1,i3,3", "u2,i1,1", "u2,i2,2", "u2,i3,3",
            "u3,i1,1", "u3,i4,2", "u3,rare,3", "u4,i4,1", "u4,i1,2", "u4,i2,3"]
    items = "item,title\n" + "".join(f"{i},{i}\n" for i in ["i1", "i2", "i3", "i4", "rare"])
    config = _bad_generic(tmp_path, "user,item,timestamp\n" + "\n".join(rows) + "\n", items)
    config.min_item_interactions = 2
    dataset, manifest = build_dataset(config)
    assert manifest["counts"] == {**manifest["counts"], "users": 2, "items": 3, "interactions": 6}
    assert dataset["items"]["raw_item_id"] == ["i1", "i2", "i3"]


def test_cold_items_counted_on_training_part():
    dataset, _ = build_dataset(_config("recbole", cold_item_threshold=3))
    counts = [0] * (num_items(dataset) + 1)
    for seq in dataset["valid"]["history"]:
        for item in seq:
            counts[item] += 1
    assert dataset["items"]["train_count"] == counts[1:]
    assert dataset["items"]["is_cold"] == [c < 3 for c in counts[1:]]
    assert dataset["test"]["target_is_cold"] == [counts[t] < 3 for t in dataset["test"]["target"]]


def test_embedded_movielens_100k():
    dataset = prepare_dataset(DataConfig())
    assert len(dataset["train"]) == 943 and num_items(dataset) == 1682
    assert sum(len(h) for h in dataset["test"]["history"]) + 943 == 100_000
    assert dataset["items"][0]["title"] == "Toy Story"


def test_prepare_writes_manifest_and_reuses_it(tmp_path):
    out = tmp_path / "prepared"
    prepare_dataset(_config("ml-1m"), out)
    manifest = load_manifest(out)
    assert manifest["counts"]["users"] == 6 and len(manifest["source_files"]) == 2
    stamp = (out / "manifest.json").stat().st_mtime_ns
    prepare_dataset(_config("ml-1m"), out)
    assert (out / "manifest.json").stat().st_mtime_ns == stamp


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _bad_generic(tmp_path, interactions: str, items: str = "item,title\ni1,A\ni2,B\ni3,C\n"):
    return DataConfig(dataset="generic", data_path=_write(tmp_path / "inter.csv", interactions),
                      item_path=_write(tmp_path / "items.csv", items), min_user_interactions=3)


GOOD = "user,item,timestamp\nu,i1,1\nu,i2,2\nu,i3,3\n"


@pytest.mark.parametrize("interactions, message", [
    ("user,item\nu,i1\n", "missing column(s) ['timestamp']"),
    ("user,item,timestamp\nu,i1,1\nu,i2,yesterday\nu,i3,3\n", "row 3, field 'timestamp': timestamp 'yesterday' is not numeric"),
    ("user,item,timestamp\nu,i1,1\nu,i9,2\nu,i3,3\n", "row 3, field 'item': item id 'i9' is not in the item file"),
    ("", "file is empty"),
    (GOOD + "u,i2,2\n", "row 5: duplicate of row 3"),
    ("user,item,timestamp\nu,i1,1\n,i2,2\n", "row 3, field 'user': missing value"),
])
def test_bad_input_names_file_and_row(tmp_path, interactions, message):
    config = _bad_generic(tmp_path, interactions)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        prepare_dataset(config, out)
    assert message in str(err.value) and "inter.csv" in str(err.value)
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_bad_json_line_and_empty_item_file(tmp_path):
    reviews = tmp_path / "reviews.json.gz"
    with gzip.open(reviews, "wt") as handle:
        handle.write(json.dumps({"reviewerID": "a", "asin": "x", "unixReviewTime": 1}) + "\n{not json\n")
    config = DataConfig(dataset="amazon2018", data_path=str(reviews), item_path=_write(tmp_path / "meta.json", ""))
    with pytest.raises(DataError, match=r"reviews.json.gz, row 2: invalid JSON"):
        build_dataset(config)
    with pytest.raises(DataError, match=r"items.csv: file is empty"):
        build_dataset(_bad_generic(tmp_path, GOOD, items=""))


def test_duplicates_can_be_dropped_and_unknown_items_dropped(tmp_path):
    config = _bad_generic(tmp_path, GOOD + "u,i2,2\nu,i9,4\n")
    config.duplicates, config.unknown_items = "drop", "drop"
    dataset, manifest = build_dataset(config)
    assert manifest["counts"]["duplicates_dropped"] == 1 and manifest["counts"]["interactions"] == 3


def test_cli_prepare(tmp_path, capsys):
    from llmrec_ft.cli import main
    assert main(["data", "prepare", "--dataset", "ml-1m", "--data_path", str(FIXTURES / "ml-1m"),
                 "--out", str(tmp_path / "o")]) == 0
    assert json.loads(capsys.readouterr().out)["users"] == 6
    assert main(["data", "prepare", "--dataset", "generic", "--data_path", str(tmp_path / "missing.csv"),
                 "--item_path", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: file not found" in capsys.readouterr().err


def test_a_folder_where_a_file_is_expected_says_so_and_lists_the_files_inside(capsys):
    from llmrec_ft.cli import main
    with pytest.raises(DataError, match=r"generic: is a folder, but dataset 'generic' reads data_path as the "
                                        r"interactions file .*: pass that file \(it holds interactions.csv, "
                                        r"interactions.jsonl, items.csv, items.jsonl\)"):
        build_dataset(_config("generic", data_path=str(FIXTURES / "generic")))
    assert main(["data", "prepare", "--dataset", "amazon2023", "--data_path", str(FIXTURES / "amazon2023"),
                 "--item_path", str(FIXTURES / "amazon2023" / "meta_Movies_and_TV.jsonl.gz")]) == 2
    assert "is a folder, but dataset 'amazon2023' reads data_path as the reviews file" in capsys.readouterr().err


def test_a_file_where_a_folder_is_expected_names_the_folder_and_its_files():
    with pytest.raises(DataError, match=r"u.data: is a file, but dataset 'ml-100k-grouplens' reads data_path as a "
                                        r"folder holding u.data and u.item: pass its folder \(.*ml-100k\)"):
        build_dataset(_config("ml-100k-grouplens", data_path=str(FIXTURES / "ml-100k" / "u.data")))
    with pytest.raises(DataError, match=r"fixtures: no ratings.dat or movies.dat in this folder; dataset 'ml-1m' "
                                        r"reads .* \(found in .*fixtures/ml-1m: pass that folder\)"):
        build_dataset(_config("ml-1m", data_path=str(FIXTURES)))
    with pytest.raises(DataError, match="is a folder, not a file"):  # any reader, below the dataset-level check
        from llmrec_ft.data.files import iter_lines
        list(iter_lines(FIXTURES))


def test_processes_preparing_the_same_folder_take_turns(tmp_path, monkeypatch):
    """Two preparations of one folder at once build it once; the second loads the first's copy (a race that
    broke seeds run side by side on one machine)."""
    from llmrec_ft.data import prepare as prepare_module
    builds = []

    def slow_build(config):
        builds.append(config.dataset)
        time.sleep(0.5)  # both would be inside the build at once without the lock
        return build_dataset(config)

    monkeypatch.setattr(prepare_module, "build_dataset", slow_build)
    folder = tmp_path / "prepared"
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: prepare_dataset(_config("ml-100k-grouplens"), folder), range(2))
    assert builds == ["ml-100k-grouplens"]
    assert first["train"].to_dict() == second["train"].to_dict()
