"""Pointwise Yes/No samples (TALLRec / SASRecLLM): "given what this user liked and disliked, will they like X?".

One sample is one position ``p`` of a user's chronological sequence: the candidate is the item at ``p``,
the label is whether its rating reached the like threshold (``liked`` in the prepared dataset), and the
history is what came before ``p`` -- the last ``max_history`` items (with their liked flags) are shown
as titles in the prompt, the last ``cf_max_len`` items feed SASRec for the user slot.

Splits follow the toolkit's leave-one-out protocol, widened by ``test_last_n``:

* ``test``  = the last ``test_last_n`` positions of each user's full sequence (1 = ``ds["test"]`` targets);
* ``valid`` = the position just before them (``test_last_n=1``: the ``ds["valid"]`` targets);
* ``train`` = up to ``train_samples_per_user`` positions before that, drawn at random (seeded).

Why ``test_last_n``: with leave-one-out, ML-100K has 943 test samples of which only ~12 have a cold
candidate (fewer than 5 training interactions), far too few for a cold AUC. The last 5 positions per user
with a threshold of 10 give 4715 test samples, 159 of them cold (the benchmark's setting). Those extra test
positions lie inside ``ds["train"]``, which SASRec is pretrained on as next-item targets -- SASRec never sees ratings, so no *label* leaks, but it has seen the interaction.
The LLM never trains on a test position: train samples always come before the valid position.

Cold = the candidate's ``is_cold`` flag in the items split: fewer training interactions than
``DataConfig.cold_item_threshold`` (the data config owns the threshold so every recipe agrees on it).

Data that already come as pointwise rows (``dataset: collm``, :mod:`llmrec_ft.data.collm`) are used as they
are: their own train/valid/test time split, labels and warm/cold flag (CoLLM's ``not_cold``); only the
history is cut to ``max_history`` / ``cf_max_len`` and the caps apply. ``test_last_n``, ``min_history`` and
``train_samples_per_user`` do not apply there.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import datasets
from transformers import PreTrainedTokenizerBase

from llmrec_ft.data.collm import POINTWISE_PREFIX, has_pointwise_splits
from llmrec_ft.llm.prompts import PromptTemplate, encode_prompt


@dataclass
class PointwiseConfig:
    """How pointwise samples are cut from the sequences. Field names double as recipe YAML keys."""

    max_history: int = field(default=10, metadata={"help": "History items shown as titles in the prompt."})
    cf_max_len: int = field(default=50, metadata={"help": "History items fed to SASRec for the user slot."})
    min_history: int = field(default=1, metadata={"help": "Positions with fewer earlier items are skipped."})
    train_samples_per_user: int = field(default=10, metadata={"help": "Cap on train positions per user."})
    test_last_n: int = field(default=1, metadata={"help": "Last n positions per user form the test set."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on the train split (None = all)."})
    max_eval_samples: int | None = field(default=None, metadata={
        "help": "Cap on valid and on each of test warm/test cold (None = all); drawn at random, seeded."})
    max_valid_samples: int | None = field(default=None, metadata={
        "help": "Cap on valid alone (None = max_eval_samples): the rows that select the checkpoint when the "
                "stages evaluate (eval_strategy), so a paper run can score the whole test set and a sample of valid."})
    sample_seed: int = field(default=0, metadata={
        "help": "Seed of the position sampling and caps (separate from the training seed, so runs with "
                "different training seeds see the same samples)."})


def _sample(seq: list[int], liked: list[bool], position: int, user_id: int, config: PointwiseConfig,
            cold: list[bool]) -> dict:
    start = max(0, position - config.max_history)
    candidate = seq[position]
    return {"user_id": user_id, "position": position,
            "history": seq[start:position], "history_liked": [bool(x) for x in liked[start:position]],
            "cf_history": seq[max(0, position - config.cf_max_len):position],
            "candidate": candidate, "label": int(bool(liked[position])), "is_cold": cold[candidate]}


def build_pointwise_samples(ds: datasets.DatasetDict, config: PointwiseConfig) -> datasets.DatasetDict:
    """``train``/``valid``/``test`` Datasets of pointwise samples (see the module docstring for the cut)."""
    if has_pointwise_splits(ds):
        given = _capped(datasets.DatasetDict({split: ds[POINTWISE_PREFIX + split]
                                              for split in ("train", "valid", "test")}), config)
        return datasets.DatasetDict({split: _given_rows(rows, config) for split, rows in given.items()})
    for split in ("test", "items"):
        if split not in ds:
            raise ValueError(f"the prepared dataset has no {split!r} split (got {sorted(ds)})")
    if config.test_last_n < 1:
        raise ValueError(f"test_last_n must be >= 1, got {config.test_last_n}")
    if config.min_history < 1:
        raise ValueError(f"min_history must be >= 1 (SASRec needs a history), got {config.min_history}")
    cold = [False, *(bool(flag) for flag in ds["items"]["is_cold"])]
    rng = random.Random(config.sample_seed)
    rows = {"train": [], "valid": [], "test": []}
    for row in ds["test"]:
        seq = [*row["history"], row["target"]]
        liked = [*row["history_liked"], row["target_liked"]]
        valid_position = len(seq) - config.test_last_n - 1
        for position in range(max(valid_position + 1, config.min_history), len(seq)):
            rows["test"].append(_sample(seq, liked, position, row["user_id"], config, cold))
        if valid_position >= config.min_history:
            rows["valid"].append(_sample(seq, liked, valid_position, row["user_id"], config, cold))
        train_positions = list(range(config.min_history, max(valid_position, config.min_history)))
        if len(train_positions) > config.train_samples_per_user:
            train_positions = sorted(rng.sample(train_positions, config.train_samples_per_user))
        rows["train"].extend(_sample(seq, liked, p, row["user_id"], config, cold) for p in train_positions)
    return _capped(datasets.DatasetDict({name: datasets.Dataset.from_list(split) for name, split in rows.items()}),
                   config)


def _given_rows(rows: datasets.Dataset, config: PointwiseConfig) -> datasets.Dataset:
    """Pointwise rows given by the data (CoLLM): the shown history and the SASRec input cut from the full one."""
    def last(values: list, n: int) -> list:
        return values[len(values) - min(len(values), n):]

    def cut(batch):
        return {"history": [last(h, config.max_history) for h in batch["history"]],
                "history_liked": [last(h, config.max_history) for h in batch["history_liked"]],
                "cf_history": [last(h, config.cf_max_len) for h in batch["history"]]}
    return rows.map(cut, batched=True, desc="Cutting histories")


def _capped(out: datasets.DatasetDict, config: PointwiseConfig) -> datasets.DatasetDict:
    if config.max_train_samples is not None:
        out["train"] = _cap(out["train"], config.max_train_samples, config.sample_seed)
    valid_cap = config.max_valid_samples if config.max_valid_samples is not None else config.max_eval_samples
    if valid_cap is not None:
        out["valid"] = _cap(out["valid"], valid_cap, config.sample_seed)
    return out


def _cap(dataset: datasets.Dataset, limit: int, seed: int) -> datasets.Dataset:
    if len(dataset) <= limit:
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit)).sort(["user_id", "position"])


def warm_cold_test_sets(samples: datasets.DatasetDict, config: PointwiseConfig) -> dict[str, datasets.Dataset]:
    """``{"warm": ..., "cold": ...}`` test sets, each capped at ``max_eval_samples``."""
    test = samples["test"]
    groups = {"warm": test.filter(lambda row: not row["is_cold"]), "cold": test.filter(lambda row: row["is_cold"])}
    if config.max_eval_samples is not None:
        groups = {name: _cap(group, config.max_eval_samples, config.sample_seed) for name, group in groups.items()}
    return groups


def answer_token_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """Token ids of the answers ``(Yes, No)``.

    A chat prompt ends with the assistant header (``...assistant\\n``), after which a chat model starts its
    reply without a leading space: ``"Yes"``. A plain prompt ends with ``"Answer:"``, so ``" Yes"``. Each must
    be a single token, so that P(Yes) is exactly one softmax over two logits at the last prompt position.
    """
    words = ("Yes", "No") if tokenizer.chat_template is not None else (" Yes", " No")
    ids = []
    for word in words:
        tokens = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            raise ValueError(f"the answer {word!r} is {len(tokens)} tokens for {type(tokenizer).__name__} "
                             f"({tokens}); the Yes/No scoring needs single-token answers")
        ids.append(tokens[0])
    if ids[0] == ids[1]:
        raise ValueError(f"'Yes' and 'No' map to the same token id {ids[0]}")
    return ids[0], ids[1]


def encode_pointwise(samples: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, template: PromptTemplate,
                     item_titles: list[str], with_collaborative_tokens: bool, max_history: int = 10,
                     cf_tokens_per_slot: int = 1, max_prompt_tokens: int | None = None) -> datasets.Dataset:
    """Render and tokenize pointwise samples; adds the columns the collator batches.

    ``item_titles[i]`` is the text shown for item id ``i`` (index 0 unused). New columns: ``input_ids``
    (prompt + answer token), ``labels`` (-100 everywhere but the answer: the loss is on the answer only),
    ``cf_items`` (item ids of the ``<|item_cf|>`` slots in prompt order; empty for text-only prompts) and
    ``truncated`` (the prompt lost old history to ``max_prompt_tokens``).
    """
    yes, no = answer_token_ids(tokenizer)

    def encode(row):
        prompt = template.render(tokenizer, [item_titles[i] for i in row["history"]], row["history_liked"],
                                 item_titles[row["candidate"]], with_collaborative_tokens=with_collaborative_tokens,
                                 max_history=max_history, cf_tokens_per_slot=cf_tokens_per_slot,
                                 max_tokens=max_prompt_tokens)
        prompt_ids = encode_prompt(tokenizer, prompt.text)
        answer = yes if row["label"] else no
        cf_items = prompt.cf_item_ids(row["history"], row["candidate"]) if with_collaborative_tokens else []
        return {"input_ids": [*prompt_ids, answer], "labels": [-100] * len(prompt_ids) + [answer],
                "cf_items": cf_items, "truncated": prompt.truncated}

    return samples.map(encode, desc="Rendering Yes/No prompts")
