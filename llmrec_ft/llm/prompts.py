"""Prompt templates for recommendation tasks, kept as Jinja2 files shipped inside the package
(``llmrec_ft/prompts/*.jinja``, package data, so a wheel or a non-editable install finds them from any
directory); a user's own template is any ``.jinja`` file path.

Why files and a sandbox: templates are edited by users, while item titles come from datasets. Titles are
always passed as *variables* to an ``ImmutableSandboxedEnvironment`` and never pasted into template source,
so a title like ``{{ 7*7 }}`` renders literally instead of being evaluated.

Titles can also contain strings the tokenizer would read as special tokens (``<|im_end|>``, or our own
``<|item_cf|>``, which would silently add a collaborative slot). Before rendering, every occurrence of
a registered special/added token inside a title gets a zero-width space (U+200B) after its first
character: it still reads the same, but tokenizes as ordinary text. (One-character added tokens cannot
be broken this way and are left alone.)

The rendered prompt is the template's text wrapped in the tokenizer's chat template (one user turn,
``add_generation_prompt=True``) when the tokenizer has one; the answer is never part of the prompt. Long
histories are cut from the oldest item, by count (``max_history``) and optionally by tokens (``max_tokens``).
"""

from __future__ import annotations

import functools
import logging
import re
from importlib import resources
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from transformers import PreTrainedTokenizerBase

from llmrec_ft.llm.tokens import ITEM_CF_TOKEN, USER_CF_TOKEN

# Every *.jinja in this package folder is a named template (importlib.resources: works from wheels and zips).
PACKAGED_PROMPTS = resources.files("llmrec_ft") / "prompts"
ZERO_WIDTH_SPACE = "\u200b"

logger = logging.getLogger(__name__)
_env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                     keep_trailing_newline=False, autoescape=False)


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    truncated: bool  # some of the oldest history items were left out
    shown_history_len: int  # the last ``shown_history_len`` history items are in the prompt
    history_cf: bool = True  # history items carry <|item_cf|> slots (False: only the candidate does)

    def cf_item_ids(self, history_ids: Sequence[int], candidate_id: int | None = None) -> list[int]:
        """Item ids for the ``<|item_cf|>`` slots, in prompt order (shown history, then the candidate)."""
        shown = list(history_ids)[len(history_ids) - self.shown_history_len:] if self.history_cf else []
        return shown + ([candidate_id] if candidate_id is not None else [])


def encode_prompt(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a rendered prompt: chat templates already contain BOS etc., plain prompts need them added."""
    return tokenizer(text, add_special_tokens=tokenizer.chat_template is None)["input_ids"]


@functools.lru_cache(maxsize=8)
def _special_token_pattern(tokens: tuple[str, ...]) -> re.Pattern:
    breakable = sorted((t for t in tokens if len(t) > 1), key=len, reverse=True)  # longest match first
    return re.compile("|".join(map(re.escape, breakable)))


def neutralize_special_tokens(text: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """Insert a zero-width space into every special/added-token string inside ``text`` (see module doc)."""
    # Our placeholders are neutralised even before add_collaborative_tokens registers them.
    tokens = {t.content for t in tokenizer.added_tokens_decoder.values()} | {USER_CF_TOKEN, ITEM_CF_TOKEN}
    pattern = _special_token_pattern(tuple(sorted(tokens)))
    return pattern.sub(lambda m: m.group(0)[0] + ZERO_WIDTH_SPACE + m.group(0)[1:], text)


class PromptTemplate:
    """A Jinja2 prompt template. Variables it receives:

    * ``history``: list of ``{title, liked (bool or None), cf}``, oldest first, already truncated;
    * ``candidate``: ``{title, cf}`` or ``None``;
    * ``user_cf``: the user slot's placeholders (empty string for text-only prompts);
    * ``chat``: whether the tokenizer's chat template will wrap the result.

    ``cf`` / ``user_cf`` hold the placeholder repeated ``cf_tokens_per_slot`` times; a template must print
    each of them exactly once (checked at render time). ``history_cf=False``: history items get an empty
    ``cf`` and only the user and the candidate carry slots (CoLLM's two-token prompt).
    """

    def __init__(self, source: str, name: str = "<string>", history_cf: bool = True):
        self.name, self.history_cf = name, history_cf
        try:
            self._template = _env.from_string(source)
        except jinja2.TemplateSyntaxError as err:
            raise ValueError(f"{name}: template syntax error on line {err.lineno}: {err.message}") from err

    @classmethod
    def from_file(cls, path: str | Path, history_cf: bool = True) -> "PromptTemplate":
        path = Path(path)
        return cls(path.read_text(encoding="utf-8"), name=str(path), history_cf=history_cf)

    def render(
        self,
        tokenizer: PreTrainedTokenizerBase,
        history_titles: Sequence[str],
        history_liked: Sequence[bool] | None = None,
        candidate_title: str | None = None,
        with_collaborative_tokens: bool = True,
        max_history: int = 10,
        cf_tokens_per_slot: int = 1,
        max_tokens: int | None = None,
    ) -> RenderedPrompt:
        """Render one prompt. Keeps the ``max_history`` most recent items, then drops more of the oldest
        ones until the prompt fits in ``max_tokens`` tokens (if given)."""
        if history_liked is not None and len(history_liked) != len(history_titles):
            raise ValueError(f"{self.name}: history_liked has {len(history_liked)} entries for "
                             f"{len(history_titles)} history titles")
        for i, title in enumerate(history_titles):
            if not isinstance(title, str):
                raise TypeError(f"{self.name}: history_titles[{i}] is {type(title).__name__}, expected str")
        if candidate_title is not None and not isinstance(candidate_title, str):
            raise TypeError(f"{self.name}: candidate_title is {type(candidate_title).__name__}, expected str")
        if max_history < 0 or cf_tokens_per_slot < 1:
            raise ValueError(f"max_history must be >= 0 and cf_tokens_per_slot >= 1, "
                             f"got {max_history} and {cf_tokens_per_slot}")

        def render_last(n: int) -> str:
            start = len(history_titles) - n
            liked = history_liked[start:] if history_liked is not None else [None] * n
            return self._render_text(tokenizer, history_titles[start:], liked, candidate_title,
                                     with_collaborative_tokens, cf_tokens_per_slot)

        shown = min(len(history_titles), max_history)
        text = render_last(shown)
        if max_tokens is not None and len(encode_prompt(tokenizer, text)) > max_tokens:
            # Prompt length grows with the number of shown items: binary-search the largest count that fits.
            low, high = 0, shown - 1
            while low < high:
                mid = (low + high + 1) // 2
                if len(encode_prompt(tokenizer, render_last(mid))) <= max_tokens:
                    low = mid
                else:
                    high = mid - 1
            shown, text = low, render_last(low)
            if len(encode_prompt(tokenizer, text)) > max_tokens:
                raise ValueError(f"{self.name}: the prompt needs more than max_tokens={max_tokens} tokens "
                                 f"even with no history shown (candidate title {candidate_title!r})")
        return RenderedPrompt(text=text, truncated=shown < len(history_titles), shown_history_len=shown,
                              history_cf=self.history_cf)

    def _render_text(self, tokenizer, titles, liked, candidate_title, with_cf, k) -> str:
        item_cf = " " + ITEM_CF_TOKEN * k if with_cf else ""
        chat = tokenizer.chat_template is not None
        variables = {
            "history": [{"title": neutralize_special_tokens(t, tokenizer),
                         "liked": None if flag is None else bool(flag), "cf": item_cf if self.history_cf else ""}
                        for t, flag in zip(titles, liked)],
            "candidate": None if candidate_title is None else {
                "title": neutralize_special_tokens(candidate_title, tokenizer), "cf": item_cf},
            "user_cf": USER_CF_TOKEN * k if with_cf else "",
            "chat": chat,
        }
        try:
            content = self._template.render(**variables)
        except jinja2.TemplateError as err:
            raise ValueError(f"{self.name}: rendering failed: {err}") from err
        text = (tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                              add_generation_prompt=True) if chat else content)
        expected_items = k * (len(titles) * self.history_cf + (candidate_title is not None)) if with_cf else 0
        found = (text.count(USER_CF_TOKEN), text.count(ITEM_CF_TOKEN))
        if found != ((k if with_cf else 0), expected_items):
            raise ValueError(f"{self.name}: rendered {found[0]} {USER_CF_TOKEN} and {found[1]} {ITEM_CF_TOKEN} "
                             f"placeholders, expected {k if with_cf else 0} and {expected_items}: the template "
                             "must print user_cf once and each item's cf once")
        return text


def packaged_prompt_names() -> list[str]:
    """Names of the templates shipped in ``llmrec_ft/prompts/`` (every ``*.jinja`` there), sorted."""
    return sorted(entry.name[: -len(".jinja")] for entry in PACKAGED_PROMPTS.iterdir()
                  if entry.is_file() and entry.name.endswith(".jinja"))


def load_prompt(task_or_path: str | Path, history_cf: bool = True, template_class: type = PromptTemplate):
    """A template by task name (``yes_no``, ``next_item``, ``collm_yes_no``, ``generative_next_item``, ...:
    ``llmrec_ft/prompts/<task>.jinja`` inside the installed package) or by the path of a user's own ``.jinja``
    file; ``history_cf`` as in :class:`PromptTemplate`; ``template_class`` a subclass to build instead.

    A value with a path separator or the ``.jinja`` suffix is read as a file path (relative to the current
    directory); anything else is a packaged template's name. Raises ``FileNotFoundError`` for a missing file
    and ``ValueError`` (listing the packaged names) for an unknown name.
    """
    value = str(task_or_path)
    if isinstance(task_or_path, Path) or value.endswith(".jinja") or "/" in value or "\\" in value:
        path = Path(value).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"prompt template file {path} does not exist (packaged templates are named "
                                    f"without a path: {packaged_prompt_names()})")
        return template_class.from_file(path, history_cf=history_cf)
    entry = PACKAGED_PROMPTS / f"{value}.jinja"
    if not entry.is_file():
        raise ValueError(f"no prompt template for task {value!r} in the package folder llmrec_ft/prompts; "
                         f"available: {packaged_prompt_names()}, or pass the path of a .jinja file")
    return template_class(entry.read_text(encoding="utf-8"), name=f"llmrec_ft/prompts/{value}.jinja",
                          history_cf=history_cf)


def truncation_report(prompts: Sequence[RenderedPrompt]) -> dict:
    """How many prompts lost history to the length bound; logged, and returned for metrics files."""
    truncated = sum(p.truncated for p in prompts)
    report = {"prompts": len(prompts), "truncated": truncated,
              "truncated_fraction": truncated / len(prompts) if prompts else 0.0}
    if truncated:
        logger.info("%d of %d prompts (%.1f%%) had their oldest history items truncated",
                    truncated, len(prompts), 100 * report["truncated_fraction"])
    return report
