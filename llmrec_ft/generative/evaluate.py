"""Top-K items from catalogue-constrained beam search, and the leave-one-out ranking metrics they give.

A generated sequence is an item only through the catalogue trie (:mod:`llmrec_ft.generative.trie`), so the
top-K list holds real, distinct items. The beam's order is the ranking: the item at 0-based position ``r``
gets score ``K - r``, every item not returned ties at the bottom, and
:func:`llmrec_ft.eval.ranking.full_ranking_metrics` turns that into HR/NDCG/MRR@K exactly as for SASRec's
full-catalogue scores (a target outside the list scores 0 for every K <= the list length). Two protocols
(issue 13): history **excluded** (history items can neither be generated nor ranked, the SASRec convention
of this toolkit) and **not excluded** (nothing masked: what TIGER/LC-Rec/RPG report on Beauty).

Titles: items with identical titles are one path in the trie (ML-100K has 23 such titles); a decoded title
stands for all its items, listed in item-id order at consecutive ranks. With the history excluded a title is
withheld once all its items are in the history, and its history items are dropped from the list.

Several processes (``torchrun`` / ``accelerate launch``): :func:`evaluate_generative` gives each process a
contiguous run of whole decoding batches (``PartialState.split_between_processes`` over the batches, not the
users), gathers the top-K lists in user order (``accelerate.utils.gather_object``) and computes the metrics
from the full lists. Every batch is then the very batch a 1-process run decodes (same users, same padding), so
the lists and metrics equal the 1-process ones exactly, on any number of processes
(tests/test_multiprocess_generative.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import datasets
import torch
from accelerate import PartialState
from accelerate.utils import gather_object

from llmrec_ft.eval.ranking import RankingAccumulator
from llmrec_ft.generative.examples import GenerativeExamples, next_item_examples
from llmrec_ft.generative.trie import CatalogTrie
from llmrec_ft.train.collator import pad

DECODERS = ("fast", "hf")


@dataclass
class CatalogDecoder:
    """A trie over distinct completions, and the item ids (1-based) each trie row stands for."""

    trie: CatalogTrie
    row_items: list[list[int]]

    def __post_init__(self):
        self.row_of = {item: row for row, items in enumerate(self.row_items) for item in items}

    @classmethod
    def from_examples(cls, examples: GenerativeExamples, vocab_size: int) -> "CatalogDecoder":
        """The trie of ``examples``'s task: one row per distinct item completion (codes are unique by
        construction; duplicate titles share a row)."""
        rows: dict[tuple[int, ...], list[int]] = {}
        for item, row in enumerate(examples.item_token_ids().tolist(), start=1):
            rows.setdefault(tuple(t for t in row if t >= 0), []).append(item)
        width = max(len(key) for key in rows)
        matrix = torch.tensor([list(key) + [-1] * (width - len(key)) for key in rows], dtype=torch.long)
        return cls(CatalogTrie(matrix, vocab_size), list(rows.values()))

    def to(self, device) -> "CatalogDecoder":
        self.trie = self.trie.to(device)
        return self

    def excluded_rows(self, history: Sequence[int]) -> list[int]:
        """Trie rows (0-based) all of whose items are in ``history``."""
        seen = set(history)
        rows = {self.row_of[i] for i in seen if i in self.row_of}
        return sorted(r for r in rows if all(i in seen for i in self.row_items[r]))


def _model_inputs(model, prompts: Sequence[dict], pad_token_id: int, device) -> dict:
    """Left-padded prompt batch; collaborative prompts become ``inputs_embeds`` with the injected vectors."""
    input_ids = pad([list(p["input_ids"]) for p in prompts], pad_token_id, "left").to(device)
    attention_mask = pad([[1] * len(p["input_ids"]) for p in prompts], 0, "left").to(device)
    if "cf_history" not in prompts[0]:
        return {"input_ids": input_ids, "attention_mask": attention_mask}
    cf_history = pad([list(p["cf_history"]) for p in prompts], 0, "left").to(device)
    cf_items = pad([list(p["cf_items"]) for p in prompts], 0, "right").to(device)
    return {"inputs_embeds": model.embed(input_ids, cf_history, cf_items), "attention_mask": attention_mask}


@torch.no_grad()
def recommend_from_prompts(model, decoder: CatalogDecoder, prompts: Sequence[dict], histories: Sequence[Sequence[int]],
                           pad_token_id: int, k: int = 10, num_beams: int = 20, exclude_history: bool = True,
                           batch_size: int = 16, decoding: str = "fast", progress=None
                           ) -> tuple[torch.LongTensor, torch.FloatTensor]:
    """``(items [U, k] item ids, scores [U, k] sequence log-probabilities)``, best first, 0 / -inf where fewer
    than ``k`` items exist. ``prompts``: :meth:`GenerativeExamples.encode_prompts` rows; ``model``: the PEFT LM
    or a ``CollaborativeLM`` (its ``lm`` decodes the injected embeddings). ``num_beams >= k`` is required."""
    from llmrec_ft.generative.decoding import constrained_beam_search, hf_generate_beam_search

    if num_beams < k:
        raise ValueError(f"num_beams={num_beams} must be >= k={k}: beam search returns at most num_beams items")
    if decoding not in DECODERS:
        raise ValueError(f"decoding={decoding!r}; choose one of {DECODERS}")
    search = constrained_beam_search if decoding == "fast" else hf_generate_beam_search
    lm = model.lm if hasattr(model, "embed") else model
    device = lm.get_input_embeddings().weight.device
    decoder.to(device)
    items = torch.zeros(len(prompts), k, dtype=torch.long)
    scores = torch.full((len(prompts), k), float("-inf"))
    for start in range(0, len(prompts), batch_size):
        batch = list(range(start, min(start + batch_size, len(prompts))))
        inputs = _model_inputs(model, [prompts[i] for i in batch], pad_token_id, device)
        excluded = [decoder.excluded_rows(histories[i]) for i in batch] if exclude_history else None
        rows, logprobs = search(lm, decoder.trie, **inputs, num_beams=num_beams,
                                top_k=min(num_beams, len(decoder.row_items)), exclude_items=excluded)
        for b, user in enumerate(batch):
            seen = set(histories[user]) if exclude_history else set()
            ranked = [(item, float(lp)) for row, lp in zip(rows[b].tolist(), logprobs[b].tolist()) if row >= 0
                      for item in decoder.row_items[row] if item not in seen][:k]
            if ranked:
                items[user, : len(ranked)] = torch.tensor([i for i, _ in ranked])
                scores[user, : len(ranked)] = torch.tensor([s for _, s in ranked])
        if progress is not None:
            progress.update(len(batch))
    return items, scores


def top_k_scores(items: torch.LongTensor, num_items: int) -> torch.Tensor:
    """``[U, num_items + 1]`` scores that rank ``items`` (0 = none) in list order above everything else."""
    k = items.shape[1]
    scores = torch.zeros(items.shape[0], num_items + 1)
    rank_score = torch.arange(k, 0, -1, dtype=torch.float).expand_as(items)
    scores.scatter_(1, items, torch.where(items > 0, rank_score, torch.zeros_like(rank_score)))
    scores[:, 0] = 0.0
    return scores


def users_of_this_process(num_users: int, batch_size: int) -> range:
    """This process's users (0-based) of ``num_users``: a contiguous run of whole ``batch_size`` batches,
    balanced over the processes by ``PartialState.split_between_processes`` (empty when there are fewer batches
    than processes). One process: ``range(num_users)``."""
    starts = list(range(0, num_users, batch_size))
    with PartialState().split_between_processes(starts) as mine:
        return range(mine[0], min(mine[-1] + batch_size, num_users)) if len(mine) else range(0)


def evaluate_generative(model, examples: GenerativeExamples, decoder: CatalogDecoder, ds: datasets.DatasetDict,
                        split: str = "test", ks: Sequence[int] = (5, 10, 20), num_beams: int = 20,
                        max_users: int | None = None, batch_size: int = 16, decoding: str = "fast") -> dict:
    """HR/NDCG/MRR@``ks`` on ``split`` for the first ``max_users`` users (None = all), history excluded and not.

    Returns ``{"exclude_history": {metric: mean}, "include_history": {...}, "num_users", "users_per_process"
    (users decoded by each process), "eval_seconds",
    "top_k": {"exclude_history": [U][max(ks)] item ids (0 = none), "include_history": ...}}``. Under several
    processes each decodes its share of the users (:func:`users_of_this_process`) and every process returns the
    same, complete result (``eval_seconds``: until the last process is done)."""
    start = time.perf_counter()
    rows = next_item_examples(ds, split, keep_history=10**9)
    rows = rows[:max_users] if max_users is not None else rows
    targets = torch.tensor([r["target"] for r in rows])
    histories = [r["history"] for r in rows]
    mine = users_of_this_process(len(rows), batch_size)
    prompts = examples.encode_prompts(rows[mine.start:mine.stop])
    report, top_k = {}, {}
    for name, exclude in (("exclude_history", True), ("include_history", False)):
        items, _ = recommend_from_prompts(model, decoder, prompts, histories[mine.start:mine.stop],
                                          examples.tokenizer.pad_token_id, k=max(ks), num_beams=num_beams,
                                          exclude_history=exclude, batch_size=batch_size, decoding=decoding)
        # all-gather, concatenated in process order = user order
        items = torch.tensor(gather_object(items.tolist()), dtype=torch.long).reshape(len(rows), max(ks))
        accumulator = RankingAccumulator(ks=ks)
        accumulator.add(top_k_scores(items, examples.num_items), targets, histories if exclude else [[]] * len(rows))
        report[name] = accumulator.compute()["all"]
        top_k[name] = items.tolist()
    return {**report, "num_users": len(rows), "users_per_process": gather_object([len(mine)]),
            "eval_seconds": time.perf_counter() - start, "top_k": top_k}
