"""The one normaliser for item text (titles, categories, brands, descriptions) before it reaches prompts.

Scraped catalogues (Amazon metadata above all) carry HTML: entities (``&amp;``, ``&#39;``, ``&ndash;``, often
escaped twice, ``&amp;amp;``), tags (``<span>``, ``<br>``) and raw newlines/tabs. An LLM reads those as
tokens, so every source passes every text field through :func:`clean_text`:

1. HTML entities unescaped (``html.unescape``), repeated while it changes anything, at most three times
   (double-escaped dumps);
2. tags removed: block tags (``br``, ``p``, ``div``, ``li``, ``td``, ``h1``-``h6`` ...) become a space, inline
   ones (``span``, ``b``, ``a`` ...) vanish, comments go too; a bare ``<`` or ``>`` in prose ("a < b") is kept;
3. Unicode NFC (a composed "é" and "e" + combining accent compare equal);
4. whitespace runs (newlines, tabs, NBSP) collapsed to one space, ends stripped.

A value that is empty after cleaning is *missing* (``clean_text`` returns ``""``), whatever it looked like
before; the ``missing_text`` option of :class:`~llmrec_ft.data.DataConfig` decides what happens to such items.
"""

from __future__ import annotations

import html
import re
import unicodedata
from typing import Any

_BLOCK_TAGS = "br|p|div|li|ul|ol|tr|td|th|table|h[1-6]|hr|dd|dt|blockquote"
_BLOCK_TAG = re.compile(rf"</?(?:{_BLOCK_TAGS})\b[^<>]*>", re.IGNORECASE)
_ANY_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>]*)?/?>", re.DOTALL)
_WHITESPACE = re.compile(r"\s+")


def clean_text(value: Any) -> str:
    """``value`` as prompt-ready text: unescaped, untagged, NFC, whitespace collapsed; ``None`` -> ``""``.

    Non-string scalars (numbers) are converted with ``str``; a list (some dumps store a title or brand as one)
    becomes its :func:`clean_list` entries joined with ``", "``, so null and blank entries never reach the text.
    A JSON object is not text: it gives ``""`` (missing)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(clean_list(value))
    if isinstance(value, dict):
        return ""
    text = str(value)
    for _ in range(3):
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    text = _ANY_TAG.sub("", _BLOCK_TAG.sub(" ", text))
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def clean_list(value: Any) -> list[str]:
    """Cleaned non-empty strings of a (possibly nested) list; a scalar counts as a one-element list.

    ``None``, blank and empty-after-cleaning entries are dropped, so ``["Office", null, " "]`` -> ``["Office"]``
    (Amazon 2018 ``category`` is a list, older dumps a list of lists)."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        value = [value]
    out: list[str] = []
    for entry in value:
        if isinstance(entry, (list, tuple)):
            out.extend(clean_list(entry))
        elif (text := clean_text(entry)):
            out.append(text)
    return out
