"""Pointwise Yes/No samples: the split positions, labels, cold flags and the encoded prompts."""

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from llmrec_ft.data import DataConfig, build_dataset
from llmrec_ft.llm.backbone import embedded_model_dir
from llmrec_ft.llm.prompts import load_prompt
from llmrec_ft.llm.tokens import ITEM_CF_TOKEN, USER_CF_TOKEN
from llmrec_ft.train.pointwise_data import (PointwiseConfig, answer_token_ids, build_pointwise_samples,
                                            encode_pointwise, warm_cold_test_sets)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def ds():
    dataset, _ = build_dataset(DataConfig(dataset="ml-100k-grouplens", data_path=str(FIXTURES / "ml-100k"),
                                          cold_item_threshold=3))
    return dataset


@pytest.fixture(scope="module")
def tokenizer():
    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    tok.add_tokens([USER_CF_TOKEN, ITEM_CF_TOKEN], special_tokens=True)
    return tok


def _full_sequences(ds):
    return {row["user_id"]: ([*row["history"], row["target"]], [*row["history_liked"], row["target_liked"]])
            for row in ds["test"]}


@pytest.mark.parametrize("test_last_n", [1, 2])
def test_splits_cut_the_sequence_in_time_order(ds, test_last_n):
    config = PointwiseConfig(max_history=2, cf_max_len=3, test_last_n=test_last_n, train_samples_per_user=100)
    samples = build_pointwise_samples(ds, config)
    sequences = _full_sequences(ds)
    by_user = {}
    for split in ("train", "valid", "test"):
        for row in samples[split]:
            seq, liked = sequences[row["user_id"]]
            p = row["position"]
            assert row["candidate"] == seq[p] and row["label"] == int(liked[p])
            assert row["history"] == seq[max(0, p - 2):p] and row["history_liked"] == liked[max(0, p - 2):p]
            assert row["cf_history"] == seq[max(0, p - 3):p]
            by_user.setdefault(row["user_id"], {}).setdefault(split, []).append(p)
    for user, positions in by_user.items():
        length = len(sequences[user][0])
        assert positions["test"] == list(range(length - test_last_n, length))
        assert positions["valid"] == [length - test_last_n - 1]
        assert positions["train"] == list(range(1, length - test_last_n - 1))  # every earlier position, in order
    if test_last_n == 1:  # leave-one-out: the toolkit's own valid/test targets
        assert sorted(samples["test"]["candidate"]) == sorted(ds["test"]["target"])
        assert sorted(samples["valid"]["candidate"]) == sorted(ds["valid"]["target"])


def test_train_cap_and_cold_flags(ds):
    config = PointwiseConfig(train_samples_per_user=2, test_last_n=2)
    samples = build_pointwise_samples(ds, config)
    users = samples["train"]["user_id"]
    assert max(users.count(u) for u in set(users)) == 2
    cold = [False, *ds["items"]["is_cold"]]
    assert all(row["is_cold"] == cold[row["candidate"]] for row in samples["test"])
    groups = warm_cold_test_sets(samples, config)
    assert len(groups["warm"]) + len(groups["cold"]) == len(samples["test"])
    assert all(groups["cold"]["is_cold"]) and not any(groups["warm"]["is_cold"])
    again = build_pointwise_samples(ds, config)  # seeded: the same draw every time
    assert again["train"]["position"] == samples["train"]["position"]


def test_valid_cap_defaults_to_the_eval_cap_and_can_differ(ds):
    full = len(build_pointwise_samples(ds, PointwiseConfig())["valid"])
    assert full > 5
    both = build_pointwise_samples(ds, PointwiseConfig(max_eval_samples=5))
    assert len(both["valid"]) == 5
    config = PointwiseConfig(max_eval_samples=5, max_valid_samples=full)
    valid_only = build_pointwise_samples(ds, config)
    assert len(valid_only["valid"]) == full
    assert all(len(group) <= 5 for group in warm_cold_test_sets(valid_only, config).values())  # tests stay capped


def test_bad_config_is_rejected(ds):
    with pytest.raises(ValueError, match="test_last_n"):
        build_pointwise_samples(ds, PointwiseConfig(test_last_n=0))


def test_encoded_prompt_has_answer_label_and_matching_slots(ds, tokenizer):
    samples = build_pointwise_samples(ds, PointwiseConfig(max_history=3))
    titles = ["", *ds["items"]["title"]]
    yes, no = answer_token_ids(tokenizer)
    hybrid = encode_pointwise(samples["test"], tokenizer, load_prompt("yes_no"), titles, True, max_history=3)
    text = encode_pointwise(samples["test"], tokenizer, load_prompt("yes_no"), titles, False, max_history=3)
    user_id, item_id = tokenizer.convert_tokens_to_ids([USER_CF_TOKEN, ITEM_CF_TOKEN])
    for row, sample in zip(hybrid, samples["test"]):
        ids, labels = row["input_ids"], row["labels"]
        assert ids[-1] == (yes if sample["label"] else no)
        assert labels[:-1] == [-100] * (len(ids) - 1) and labels[-1] == ids[-1]  # loss on the answer only
        assert ids.count(user_id) == 1
        assert ids.count(item_id) == len(row["cf_items"]) == len(sample["history"][-3:]) + 1
        assert row["cf_items"] == [*sample["history"][-3:], sample["candidate"]]
        decoded = tokenizer.decode(ids)
        assert titles[sample["candidate"]] in decoded
    for row in text:
        assert row["cf_items"] == [] and user_id not in row["input_ids"] and item_id not in row["input_ids"]


def test_title_with_placeholder_string_adds_no_slot(ds, tokenizer):
    samples = build_pointwise_samples(ds, PointwiseConfig(max_history=3))
    titles = ["", *(f"{t} {ITEM_CF_TOKEN}" for t in ds["items"]["title"])]
    encoded = encode_pointwise(samples["test"], tokenizer, load_prompt("yes_no"), titles, True, max_history=3)
    item_id = tokenizer.convert_tokens_to_ids(ITEM_CF_TOKEN)
    assert all(row["input_ids"].count(item_id) == len(row["cf_items"]) for row in encoded)


def test_answers_are_single_distinct_tokens(tokenizer):
    yes, no = answer_token_ids(tokenizer)
    assert yes != no
    assert tokenizer.decode([yes]) == "Yes" and tokenizer.decode([no]) == "No"  # chat template: no leading space
