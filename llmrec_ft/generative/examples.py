"""Prompt/completion examples for generative recommendation (the model writes the next item itself).

Tasks (issue 13; completion = what the model learns to write, prompt = ``llmrec_ft/prompts/generative_*.jinja``):

* ``next_sid``: the next item's semantic-ID code tokens, e.g. ``<a_17><b_3><c_200><d_0>`` (TIGER, LC-Rec);
* ``next_title``: the next item's title followed by EOS (BIGRec, arXiv 2308.08434);
* alignment (LC-Rec, arXiv 2311.09049, Sec. 3.2), optionally mixed in: ``title_to_codes`` and
  ``codes_to_title`` for every catalogue item, so the new code tokens get tied to what the LLM knows.

The history is shown as codes, titles or both (``history_format``), the most recent ``max_history`` items,
optionally with the ``<|user_cf|>``/``<|item_cf|>`` placeholders of :mod:`llmrec_ft.llm.collaborative_lm`
(one slot per shown item, plus the user slot fed with the last ``cf_max_len`` items).

Training examples: every prefix of every training sequence (TIGER, arXiv 2305.05065, Sec. 4.1: "for each
user, we use all the items except the last two for training ... every prefix is a training example"), so
the training part of the leave-one-out split, ``ds["train"]["items"]``, is the only source of targets; the
valid and test targets are never a completion (tested). Evaluation examples are the ``valid``/``test``
rows: the full history and the held-out target.

Token ids, not text, are the contract between training and decoding: :meth:`GenerativeExamples.item_token_ids`
gives each item's completion ids exactly as the training completions have them, and the catalogue trie is
built from the same matrix. Titles are tokenised on their own (``add_special_tokens=False``) and appended to
the prompt's ids, so no merge across the prompt/completion boundary can make the two differ.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

import datasets
import jinja2
import torch
from transformers import PreTrainedTokenizerBase

from llmrec_ft.llm.prompts import PromptTemplate, load_prompt, neutralize_special_tokens
from llmrec_ft.llm.tokens import ITEM_CF_TOKEN, USER_CF_TOKEN

TASKS = ("next_sid", "next_title")
HISTORY_FORMATS = ("codes", "titles", "codes_and_titles")
ALIGNMENT_TASKS = ("title_to_codes", "codes_to_title")


@dataclass
class ExampleConfig:
    """What the examples look like. Field names double as recipe YAML keys."""

    task: str = field(default="next_sid", metadata={"help": f"Completion: one of {TASKS}."})
    history_format: str = field(default="codes_and_titles", metadata={"help": f"One of {HISTORY_FORMATS}."})
    max_history: int = field(default=20, metadata={"help": "Most recent history items shown in a prompt."})
    collaborative_tokens: bool = field(default=False, metadata={
        "help": "Add <|user_cf|>/<|item_cf|> placeholders (projected SASRec vectors) to the prompt."})
    cf_max_len: int = field(default=50, metadata={"help": "History items the ID model reads for <|user_cf|>."})
    alignment_tasks: list[str] = field(default_factory=list, metadata={
        "help": f"LC-Rec alignment examples mixed into training: any of {ALIGNMENT_TASKS}."})
    max_train_examples: int | None = field(default=None, metadata={
        "help": "Random subset (seeded) of the next-item training examples; None = every prefix."})
    example_seed: int = field(default=0, metadata={"help": "Seed of that subset."})

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r}; choose one of {TASKS}")
        if self.history_format not in HISTORY_FORMATS:
            raise ValueError(f"history_format={self.history_format!r}; choose one of {HISTORY_FORMATS}")
        unknown = set(self.alignment_tasks) - set(ALIGNMENT_TASKS)
        if unknown:
            raise ValueError(f"alignment_tasks {sorted(unknown)} unknown; choose from {ALIGNMENT_TASKS}")
        if self.max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {self.max_history}")

    @property
    def needs_codes(self) -> bool:
        return self.task == "next_sid" or self.history_format != "titles" or bool(self.alignment_tasks)


def next_item_examples(ds: datasets.DatasetDict, split: str, keep_history: int) -> list[dict]:
    """``[{"user_id", "history": [item ids, oldest first], "target": item id}]`` for ``split``.

    ``train``: one example per prefix of each training sequence (targets from position 1 on); ``valid``/
    ``test``: the split's rows. Histories keep their last ``keep_history`` items (what prompt and ID model read).
    """
    if split == "train":
        return [{"user_id": row["user_id"], "history": row["items"][max(0, t - keep_history):t],
                 "target": row["items"][t]}
                for row in ds["train"] for t in range(1, len(row["items"]))]
    return [{"user_id": row["user_id"], "history": row["history"][-keep_history:], "target": row["target"]}
            for row in ds[split]]


class GenerativePrompt(PromptTemplate):
    """A :class:`PromptTemplate` rendered from arbitrary variables (titles neutralised by the caller)."""

    def render_text(self, tokenizer: PreTrainedTokenizerBase, expected_cf: tuple[int, int] = (0, 0),
                    **variables) -> str:
        """The template's text, wrapped in the chat template when the tokenizer has one; ``expected_cf`` is the
        number of ``<|user_cf|>`` and ``<|item_cf|>`` placeholders the result must hold (ValueError otherwise)."""
        chat = tokenizer.chat_template is not None
        try:
            content = self._template.render(chat=chat, **variables)
        except jinja2.TemplateError as err:
            raise ValueError(f"{self.name}: rendering failed: {err}") from err
        text = (tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                              add_generation_prompt=True) if chat else content)
        found = (text.count(USER_CF_TOKEN), text.count(ITEM_CF_TOKEN))
        if found != expected_cf:
            raise ValueError(f"{self.name}: rendered {found} ({USER_CF_TOKEN}, {ITEM_CF_TOKEN}) placeholders, "
                             f"expected {expected_cf}")
        return text


class GenerativeExamples:
    """Renders and tokenises generative examples for one catalogue.

    ``titles``: ``[N]`` item titles, row ``i`` = item id ``i + 1``; ``code_strings``: ``[N]`` each item's code
    tokens concatenated (``"".join(tokens.code_tokens(sids)[i])``) and ``code_token_ids``: ``[N, L + 1]`` their
    ids (``tokens.add_code_tokens``), both required when ``config.needs_codes``.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, titles: Sequence[str], config: ExampleConfig,
                 code_strings: Sequence[str] | None = None, code_token_ids: torch.Tensor | None = None,
                 cf_tokens_per_slot: int = 1):
        if config.needs_codes and (code_strings is None or code_token_ids is None):
            raise ValueError(f"task={config.task}, history_format={config.history_format}, alignment="
                             f"{config.alignment_tasks} need code_strings and code_token_ids (semantic IDs)")
        if code_strings is not None and len(code_strings) != len(titles):
            raise ValueError(f"{len(code_strings)} code strings for {len(titles)} titles")
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token: a generated title would have no end")
        self.tokenizer, self.config, self.k = tokenizer, config, cf_tokens_per_slot
        self.titles = [neutralize_special_tokens(t, tokenizer) for t in titles]
        self.code_strings = list(code_strings) if code_strings is not None else None
        self.code_ids = code_token_ids.tolist() if code_token_ids is not None else None
        self.next_item = load_prompt("generative_next_item", template_class=GenerativePrompt)
        self.alignment = load_prompt("generative_alignment", template_class=GenerativePrompt)
        title_ids = tokenizer(self.titles, add_special_tokens=False)["input_ids"]
        self.title_ids = [ids + [tokenizer.eos_token_id] for ids in title_ids]

    @property
    def num_items(self) -> int:
        return len(self.titles)

    def item_token_ids(self, task: str | None = None) -> torch.Tensor:
        """``[N, max_len]`` long: each item's completion ids for ``task`` (default: the config's), right-padded
        with -1 -- the input of ``trie.CatalogTrie``."""
        rows = self.code_ids if (task or self.config.task) == "next_sid" else self.title_ids
        width = max(len(r) for r in rows)
        return torch.tensor([r + [-1] * (width - len(r)) for r in rows], dtype=torch.long)

    def _completion(self, item: int, task: str) -> list[int]:
        return list(self.code_ids[item - 1]) if task == "next_sid" else self.title_ids[item - 1]

    def prompt_text(self, history: Sequence[int]) -> str:
        """The next-item prompt for a history of item ids (oldest first; the last ``max_history`` are shown)."""
        shown = list(history)[-self.config.max_history:]
        fmt, with_cf = self.config.history_format, self.config.collaborative_tokens
        items = [{"title": self.titles[i - 1] if fmt != "codes" else "",
                  "codes": self.code_strings[i - 1] if fmt != "titles" else "",
                  "cf": " " + ITEM_CF_TOKEN * self.k if with_cf else ""} for i in shown]
        expected = (self.k, self.k * len(shown)) if with_cf else (0, 0)
        return self.next_item.render_text(self.tokenizer, expected, history=items, task=self.config.task,
                                          user_cf=USER_CF_TOKEN * self.k if with_cf else "")

    def _cf_inputs(self, history: Sequence[int]) -> dict:
        if not self.config.collaborative_tokens:
            return {}
        return {"cf_history": list(history)[-self.config.cf_max_len:],
                "cf_items": list(history)[-self.config.max_history:]}

    def encode_prompts(self, examples: Sequence[dict]) -> list[dict]:
        """``[{"input_ids", ("cf_history", "cf_items")}]``: prompts without completion, for decoding."""
        texts = [self.prompt_text(ex["history"]) for ex in examples]
        ids = self.tokenizer(texts, add_special_tokens=self.tokenizer.chat_template is None)["input_ids"]
        return [{"input_ids": row, **self._cf_inputs(ex["history"])} for row, ex in zip(ids, examples)]

    def alignment_examples(self) -> list[tuple[str, list[int]]]:
        """``(prompt text, completion ids)`` for every catalogue item and every configured alignment task."""
        out = []
        for task in self.config.alignment_tasks:
            for item in range(1, self.num_items + 1):
                text = self.alignment.render_text(self.tokenizer, direction=task, title=self.titles[item - 1],
                                                  codes=self.code_strings[item - 1])
                out.append((text, self._completion(item, "next_sid" if task == "title_to_codes" else "next_title")))
        return out

    def training_dataset(self, ds: datasets.DatasetDict) -> datasets.Dataset:
        """The SFT dataset: every training prefix (or ``max_train_examples`` of them) plus the alignment
        examples, shuffled. Columns ``input_ids`` and ``completion_mask`` (1 on completion tokens: TRL's
        pre-tokenized prompt-completion form, loss on the completion only); with collaborative tokens also
        ``labels`` (-100 on the prompt), ``cf_history`` and ``cf_items`` for ``CollaborativeSFTTrainer``."""
        cfg = self.config
        examples = next_item_examples(ds, "train", max(cfg.max_history, cfg.cf_max_len))
        rng = random.Random(cfg.example_seed)
        if cfg.max_train_examples is not None and len(examples) > cfg.max_train_examples:
            examples = rng.sample(examples, cfg.max_train_examples)
        prompts = self.encode_prompts(examples)
        rows = [{**p, "completion": self._completion(ex["target"], cfg.task)} for p, ex in zip(prompts, examples)]
        if cfg.alignment_tasks:
            if cfg.collaborative_tokens:
                raise ValueError("alignment tasks carry no collaborative slots; turn one of the two off")
            texts, completions = zip(*self.alignment_examples())
            ids = self.tokenizer(list(texts), add_special_tokens=self.tokenizer.chat_template is None)["input_ids"]
            rows += [{"input_ids": p, "completion": c} for p, c in zip(ids, completions)]
        rng.shuffle(rows)
        columns: dict[str, list] = {"input_ids": [], "completion_mask": []}
        if cfg.collaborative_tokens:
            columns.update(labels=[], cf_history=[], cf_items=[])
        for row in rows:
            prompt, completion = row["input_ids"], row["completion"]
            columns["input_ids"].append(prompt + completion)
            columns["completion_mask"].append([0] * len(prompt) + [1] * len(completion))
            if cfg.collaborative_tokens:
                columns["labels"].append([-100] * len(prompt) + completion)
                columns["cf_history"].append(row["cf_history"])
                columns["cf_items"].append(row["cf_items"])
        return datasets.Dataset.from_dict(columns)
