"""Score many candidate items for one user with a single pass over the shared prompt prefix.

Why: ranking a user's whole catalog with a Yes/No model asks the same question once per candidate. The
prompts differ only near the end (candidate title, its collaborative slot, the closing instruction), so the
naive way, one full forward per candidate, recomputes the ~300-token history C times. Here the prefix runs
once with ``use_cache=True``; its KV cache is repeated over a chunk of candidates and only the ~20-token
suffixes run against it. Linear-layer work drops from ``C * (P + S)`` to ``P + C * S`` tokens.

The scores are the next-token logits of ``token_ids`` (e.g. the " Yes"/" No" ids) at each prompt's last
position, exactly what a full forward of ``prefix + suffix`` gives (up to floating-point rounding: the
attention kernels see different shapes). Inputs are embeddings, so prompts with injected collaborative
vectors (``CollaborativeLM.embed``) work as well as plain token embeddings. ``shared_prefix=False`` runs
the naive full forwards, the reference the fast path is checked against.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from llmrec_ft.llm.answer_loss import split_causal_lm


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix shared by all ``sequences``, leaving at least one suffix token each.

    Splitting token ids (rather than prompt text) guarantees that prefix + suffix are exactly the tokens
    the full prompt tokenizes to, whatever the tokenizer merges across the boundary.
    """
    if not sequences or min(len(s) for s in sequences) < 1:
        raise ValueError("need at least one non-empty sequence")
    first, limit = sequences[0], min(len(s) for s in sequences) - 1
    length = 0
    while length < limit and all(s[length] == first[length] for s in sequences):
        length += 1
    return length


def _last_position_logits(head: nn.Module, hidden: torch.Tensor, last: torch.Tensor, token_ids: torch.Tensor):
    rows = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    return head(rows).float()[:, token_ids]


@torch.no_grad()
def score_candidates(lm: nn.Module, prefix_embeds: torch.Tensor, suffix_embeds: torch.Tensor,
                     suffix_lengths: torch.Tensor, token_ids: Sequence[int], chunk_size: int = 64,
                     shared_prefix: bool = True) -> torch.Tensor:
    """``[C, len(token_ids)]`` logits at the last token of every ``prefix + suffix_c`` prompt.

    ``prefix_embeds``: ``[P, H]``; ``suffix_embeds``: ``[C, S, H]`` right-padded, ``suffix_lengths``: ``[C]``
    (each >= 1). ``lm`` is a plain or PEFT-wrapped HF causal LM. Candidates are processed in chunks of
    ``chunk_size``, sorted by suffix length so chunks carry little padding.
    """
    if prefix_embeds.ndim != 2 or suffix_embeds.ndim != 3 or suffix_lengths.shape != suffix_embeds.shape[:1]:
        raise ValueError(f"expected prefix [P, H], suffixes [C, S, H] and lengths [C]; got "
                         f"{tuple(prefix_embeds.shape)}, {tuple(suffix_embeds.shape)}, {tuple(suffix_lengths.shape)}")
    if suffix_lengths.min() < 1:
        raise ValueError("every candidate needs at least one suffix token (its last prompt token)")
    decoder, head = split_causal_lm(lm)
    device = prefix_embeds.device
    token_ids = torch.as_tensor(token_ids, device=device)
    suffix_lengths = suffix_lengths.to(device)
    prefix_len = prefix_embeds.shape[0]
    prefix_cache = decoder(inputs_embeds=prefix_embeds[None], use_cache=True).past_key_values if shared_prefix else None

    order = torch.argsort(suffix_lengths)
    scores = torch.empty(len(order), len(token_ids), device=device)
    for chunk in order.split(chunk_size):
        lengths = suffix_lengths[chunk]
        width = int(lengths.max())
        suffix = suffix_embeds[chunk, :width]
        suffix_mask = torch.arange(width, device=device) < lengths[:, None]
        mask = torch.cat([suffix_mask.new_ones(len(chunk), prefix_len), suffix_mask], dim=1).long()
        if shared_prefix:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(len(chunk))
            positions = (prefix_len + torch.arange(width, device=device)).expand(len(chunk), -1)
            hidden = decoder(inputs_embeds=suffix, attention_mask=mask, position_ids=positions,
                             past_key_values=cache, use_cache=True).last_hidden_state
            last = lengths - 1
        else:
            prompts = torch.cat([prefix_embeds.expand(len(chunk), -1, -1), suffix], dim=1)
            hidden = decoder(inputs_embeds=prompts, attention_mask=mask, use_cache=False).last_hidden_state
            last = prefix_len + lengths - 1
        scores[chunk] = _last_position_logits(head, hidden, last, token_ids)
    return scores


@torch.no_grad()
def score_prompts(model: nn.Module, prompts: Sequence[Sequence[int]], token_ids: Sequence[int],
                  cf_history: Sequence[int] | None = None, cf_items: Sequence[Sequence[int]] | None = None,
                  chunk_size: int = 64, shared_prefix: bool = True) -> torch.Tensor:
    """``[C, len(token_ids)]`` next-token logits for one user's candidate prompts (token ids, as encoded).

    ``model`` is a plain/PEFT causal LM, or a ``CollaborativeLM`` (anything with ``embed`` and ``lm``): then
    ``cf_history`` feeds the user slot and ``cf_items[c]`` the item slots of prompt ``c`` in order; the
    slots inside the shared prefix (the history's) must carry the same ids in every prompt.
    """
    split = common_prefix_length(prompts)
    lm = model.lm if hasattr(model, "embed") else model
    device = lm.get_input_embeddings().weight.device
    prefix_ids = torch.as_tensor(prompts[0][:split], device=device)[None]
    suffixes = [torch.as_tensor(p[split:], device=device) for p in prompts]
    lengths = torch.tensor([len(s) for s in suffixes], device=device)
    suffix_ids = torch.nn.utils.rnn.pad_sequence(suffixes, batch_first=True, padding_value=0)  # masked anyway
    if not hasattr(model, "embed"):
        embed = lm.get_input_embeddings()
        return score_candidates(lm, embed(prefix_ids)[0], embed(suffix_ids), lengths, token_ids, chunk_size,
                                shared_prefix)
    history = torch.as_tensor(cf_history, device=device)[None] if cf_history is not None else None
    prefix_items = suffix_items = None
    if cf_items is not None:
        in_prefix = int((prefix_ids == model.token_ids.item).sum()) // model.projector.tokens_per_slot
        if len({tuple(items[:in_prefix]) for items in cf_items}) != 1:
            raise ValueError(f"the {in_prefix} item slots of the shared prefix get different ids across prompts")
        prefix_items = torch.as_tensor(cf_items[0][:in_prefix], dtype=torch.long, device=device)[None]
        suffix_items = torch.nn.utils.rnn.pad_sequence(
            [torch.as_tensor(items[in_prefix:], dtype=torch.long) for items in cf_items], batch_first=True).to(device)
    prefix = model.embed(prefix_ids, history, prefix_items)[0]
    suffix = model.embed(suffix_ids, None, suffix_items)
    return score_candidates(lm, prefix, suffix, lengths, token_ids, chunk_size, shared_prefix)
