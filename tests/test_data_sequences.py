"""The ``sequences`` source: one line per user + an item TSV, same split, errors and manifest as the others."""

import os
from pathlib import Path

import pytest

from llmrec_ft.data import DataConfig, DataError, build_dataset, load_manifest, prepare_dataset

FIXTURES = Path(__file__).parent / "fixtures"
# The team's benchmark copy sits next to the clone (../shared/data); LLMREC_FT_SHARED_DATA points elsewhere.
SHARED_DATA = Path(os.environ.get("LLMREC_FT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BEAUTY = SHARED_DATA / "amazon14-beauty"


def _write(tmp_path, lines, items="item_id\tasin\tkeywords\n1\tA1\tred lipstick\n2\tA2\tnail polish\n3\tA3\tblush\n"):
    (tmp_path / "seq.txt").write_text("".join(f"{line}\n" for line in lines))
    (tmp_path / "items.tsv").write_text(items)
    return DataConfig(dataset="sequences", data_path=str(tmp_path / "seq.txt"), item_path=str(tmp_path / "items.tsv"),
                      min_user_interactions=3)


def test_sequences_match_the_reference_split(tmp_path):
    """Writing the ML-100K fixture's ordered sequences as a sequence file reproduces its leave-one-out split."""
    reference, _ = build_dataset(DataConfig(dataset="ml-100k-grouplens", data_path=str(FIXTURES / "ml-100k")))
    raw = reference["items"]["raw_item_id"]
    lines = [" ".join([f"u{row['user_id']}", *(raw[i - 1] for i in row["history"] + [row["target"]])])
             for row in reference["test"]]
    items = "item_id\ttitle\tgenre\n" + "".join(f"{r}\t{t}\tdrama\n" for r, t in zip(raw, reference["items"]["title"]))
    config = _write(tmp_path, lines, items)
    dataset, manifest = build_dataset(config)
    assert dataset["train"]["items"] == reference["train"]["items"]
    assert dataset["valid"]["target"] == reference["valid"]["target"]
    assert dataset["test"]["target"] == reference["test"]["target"]
    assert dataset["items"]["title"] == reference["items"]["title"]
    assert dataset["items"]["text"][0] == f"{reference['items']['title'][0]}. genre: drama"
    assert manifest["counts"]["interactions"] == 33 and not manifest["has_ratings"]


def test_file_order_is_time_order_and_repeats_are_kept(tmp_path):
    dataset, _ = build_dataset(_write(tmp_path, ["7 3 1 3 2", "8 2 1 3"]))
    assert dataset["train"][0]["items"] == [3, 1]
    assert (dataset["valid"][0]["target"], dataset["test"][0]["target"]) == (3, 2)  # a repeat is an event
    assert dataset["test"][0]["history"] == [3, 1, 3]
    assert dataset["items"]["title"] == ["red lipstick", "nail polish", "blush"]
    assert dataset["items"]["text"][0] == "red lipstick"  # asin is an identifier, not text


@pytest.mark.parametrize("lines, items, message", [
    (["1 1 2 3", "2 1 9 3"], None, r"seq\.txt, row 2, field 'item': item id '9' is not in the item file"),
    (["1 1 2 3", "2"], None, r"seq\.txt, row 2, field 'items': user '2' has no items"),
    (["1 1 2 3", "1 1 2 3"], None, r"seq\.txt, row 2, field 'user': user '1' already has a line \(row 1\)"),
    (["1 1 2 3"], "item_id\tname\n1\tA\n2\n", r"items\.tsv, row 3: expected 2 '\\t'-separated fields \(item_id, name\), got 1"),
    (["1 1 2 3"], "item_id\tname\n1\tA\n2\t \n3\tC\n", r"items\.tsv, row 3, field 'name'"),
    (["1 1 2 3"], "item_id\tname\n1\tA\n\tB\n", r"items\.tsv, row 3, field 'item_id': missing value"),
    (["1 1 2 3"], "item_id\tname\n1\tA\n1\tB\n", r"items\.tsv, row 3, field 'item_id': item id '1' appears twice"),
    (["1 1 2 3"], "item_id\n1\n", r"items\.tsv, row 1: expected a header"),
])
def test_bad_input_names_file_row_and_field(tmp_path, lines, items, message):
    config = _write(tmp_path, lines) if items is None else _write(tmp_path, lines, items)
    with pytest.raises(DataError, match=message):
        build_dataset(config)


def test_prepare_writes_manifest_with_source_hashes(tmp_path):
    config = _write(tmp_path, ["1 1 2 3", "2 3 2 1"])
    prepare_dataset(config, tmp_path / "out")
    manifest = load_manifest(tmp_path / "out")
    assert set(manifest["source_files"]) == {str(tmp_path / "seq.txt"), str(tmp_path / "items.tsv")}
    assert manifest["counts"] == {**manifest["counts"], "users": 2, "items": 3, "interactions": 6}


@pytest.mark.skipif(not (BEAUTY / "sequences.txt").exists(), reason="../shared/data (benchmark copy) not present")
def test_real_amazon_beauty_file():
    """The published Beauty numbers: 22,363 users, 12,101 items, 198,502 interactions; item numbering kept."""
    dataset, manifest = build_dataset(DataConfig(dataset="sequences", data_path=str(BEAUTY / "sequences.txt"),
                                                 item_path=str(BEAUTY / "items.tsv")))
    counts = manifest["counts"]
    assert (counts["users"], counts["items"], counts["interactions"]) == (22363, 12101, 198502)
    first = (BEAUTY / "sequences.txt").read_text().split("\n", 1)[0].split()[1:]
    assert dataset["test"][0]["target"] == int(first[-1]) and dataset["valid"][0]["target"] == int(first[-2])
    assert dataset["items"]["title"][0] == "nail lacquer simmer and shimmer"
    assert dataset["items"]["title"][10204] == "B001LTVF7G"  # no keywords: its ASIN stands in
