"""Catalogue-constrained beam search: the one place generative recommendation decodes (issues 13 and 14).

Two paths that return the same thing (top-K distinct catalogue items per prompt and their sequence
log-probabilities ``sum_t log p(token_t | prompt, tokens_<t)`` under the model's full-vocabulary softmax):

* :func:`hf_generate_beam_search`, the reference: ``model.generate(num_beams=W)`` with
  :class:`~llmrec_ft.generative.trie.CatalogConstraintLogitsProcessor` (TIGER Sec. 3.2 decodes with plain beam
  search; LC-Rec, MiniOneRec and RecLM-cgen use ``generate`` with a per-beam ``prefix_allowed_tokens_fn``).
  ``generate`` copies each prompt ``W`` times before the prefill, so it runs ``W x`` the prompt tokens.
* :func:`constrained_beam_search`, the fast path (issue 14): each prompt is prefilled ONCE and its KV cache is
  shared by its ``W`` beams, either indexed out to ``W`` rows (``kv_sharing="expand"``, ``Cache.reorder_cache``)
  or kept as one row that the beams attend to through a 4-D ancestry mask (``"tree"``, no per-beam copy at
  all); each step scores only the trie children of each beam (a gather of ``[rows, D]`` log-probabilities,
  ``D`` = widest trie node at that depth) instead of masking a ``[rows, vocab]`` matrix; many users run in one
  batch; a user leaves the batch as soon as its top-W finished list cannot change. With ``compile_decode`` the
  few decode steps run a compiled forward (``torch.compile``, CUDA graphs under ``mode="reduce-overhead"``) on a
  transformers ``StaticCache`` whose shapes repeat across batches (see :class:`_StaticBeamCache`).

Both use the beam-search rule of ``transformers`` (>= 4.50 vectorised ``_beam_search``) with
``length_penalty=0`` (plain sums of log-probabilities, so titles of different lengths compare by probability)
and ``early_stopping=False``: per step keep the best ``2W`` (beam, token) candidates; those completing an item
among the first ``W`` enter the user's finished list (best ``W`` kept); the best ``W`` not completing one stay
running; a user stops when its finished list is full and no running beam scores above its worst entry (exact:
log-probabilities only decrease). So in fp32 the two paths return identical lists, and with ``W`` >= the
catalogue size both equal the brute-force ranking of every item (tests/test_generative_decoding.py).

Prompts are left-padded ``input_ids`` ``[B, P]`` with ``attention_mask``, or ``inputs_embeds`` ``[B, P, H]``
(collaborative tokens injected by ``CollaborativeLM.embed``); positions follow ``generate``:
``cumsum(mask) - 1``.
"""

from __future__ import annotations

import warnings
import weakref

import torch
import torch.nn.functional as F
from transformers import CompileConfig, GenerationConfig, LogitsProcessorList, StaticCache

from llmrec_ft.generative.trie import CatalogConstraintLogitsProcessor, CatalogTrie

NEG_INF = float("-inf")
# generate() gives the copies of the first beam a -1e9 head start penalty; anything below this is such a copy
_GHOST_SCORE = -1e8
# compile_decode: prompts take a multiple of this many cache slots, so prompt widths compile few shapes
STATIC_PROMPT_BUCKET = 64


def _check_inputs(input_ids, attention_mask, inputs_embeds, num_beams, top_k, exclude_items):
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids [B, P] and inputs_embeds [B, P, H]")
    prompts = input_ids if input_ids is not None else inputs_embeds
    if attention_mask is not None and attention_mask.shape != prompts.shape[:2]:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} does not match prompts "
                         f"{tuple(prompts.shape[:2])}")
    if attention_mask is not None and (attention_mask[:, -1] == 0).any():
        raise ValueError("prompts must be left-padded: the last position of every row has to be a real token")
    if top_k > num_beams:
        raise ValueError(f"top_k ({top_k}) cannot exceed num_beams ({num_beams})")
    if exclude_items is not None and len(exclude_items) != prompts.shape[0]:
        raise ValueError(f"exclude_items has {len(exclude_items)} lists for {prompts.shape[0]} prompts")
    return prompts.shape[0]


def _end_token(trie: CatalogTrie) -> int | None:
    """The token every item ends with when lengths vary (titles + eos), else ``None`` (fixed-length codes)."""
    last = trie.item_token_ids.gather(1, (torch.as_tensor(trie.item_lengths, device=trie.device) - 1)[:, None])
    if len(set(trie.item_lengths.tolist())) == 1:
        return None
    if (last != last[0]).any():
        raise ValueError("variable-length item sequences must all end with the same end token (eos)")
    return int(last[0])


@torch.no_grad()
def hf_generate_beam_search(model, trie: CatalogTrie, input_ids=None, attention_mask=None, inputs_embeds=None,
                            num_beams: int = 20, top_k: int = 10, exclude_items: list[list[int]] | None = None,
                            ) -> tuple[torch.LongTensor, torch.FloatTensor]:
    """Reference path: ``model.generate`` beam search under the trie. Arguments and returns as
    :func:`constrained_beam_search`: item indices ``[B, top_k]`` (``-1`` past the last possible item) and sequence
    log-probabilities ``[B, top_k]`` (``-inf`` there), best first."""
    batch = _check_inputs(input_ids, attention_mask, inputs_embeds, num_beams, top_k, exclude_items)
    prompt_length = input_ids.shape[1] if input_ids is not None else 0  # generate() returns only new tokens then
    processor = CatalogConstraintLogitsProcessor(trie, prompt_length, num_beams, exclude_items)
    end = _end_token(trie)
    pad = model.generation_config.pad_token_id
    config = GenerationConfig(num_beams=num_beams, num_return_sequences=num_beams, do_sample=False,
                              max_new_tokens=trie.max_len, length_penalty=0.0, early_stopping=False,
                              eos_token_id=end if end is not None else model.generation_config.eos_token_id,
                              pad_token_id=pad if pad is not None else 0,
                              return_dict_in_generate=True, output_scores=True)
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                         generation_config=config, logits_processor=LogitsProcessorList([processor]))
    items = trie.items_of(out.sequences[:, prompt_length:]).view(batch, num_beams)
    scores = out.sequences_scores.float().view(batch, num_beams)
    keep = (items >= 0) & (scores > _GHOST_SCORE)
    scores = torch.where(keep, scores, NEG_INF)
    top_items = torch.full((batch, top_k), -1, dtype=torch.long, device=items.device)
    top_scores = torch.full((batch, top_k), NEG_INF, device=items.device)
    for user in range(batch):  # reference path: clarity over speed
        order = torch.argsort(scores[user], descending=True, stable=True)
        seen = []
        for beam in order.tolist():
            item = int(items[user, beam])
            if keep[user, beam] and item not in seen:
                seen.append(item)
                top_items[user, len(seen) - 1], top_scores[user, len(seen) - 1] = item, scores[user, beam]
            if len(seen) == top_k:
                break
    return top_items, top_scores


@torch.no_grad()
def constrained_beam_search(model, trie: CatalogTrie, input_ids=None, attention_mask=None, inputs_embeds=None,
                            num_beams: int = 20, top_k: int = 10, exclude_items: list[list[int]] | None = None,
                            users_per_batch: int = 32, drop_finished_users: bool = True, kv_sharing: str = "auto",
                            compile_decode: bool | CompileConfig = False,
                            ) -> tuple[torch.LongTensor, torch.FloatTensor]:
    """Top-``top_k`` catalogue items per prompt by constrained beam search of width ``num_beams``.

    ``input_ids`` ``[B, P]`` left-padded with ``attention_mask`` ``[B, P]`` (optional without padding), or
    ``inputs_embeds`` ``[B, P, H]``. ``exclude_items[b]``: item indices prompt ``b`` must never get (its history).
    ``model``: any HF causal LM (plain or PEFT) whose forward takes ``logits_to_keep``; ``trie`` on the model's
    device. ``users_per_batch`` prompts are prefilled and searched together. A small model on a GPU is bound by
    per-call host overhead (H200, 50 beams: a call takes 120 ms for one user and 127 ms for 32 users on the 0.5B
    shape, 111 ms for one user on the 7B shape), so larger batches pay as long as memory allows (peak 8.9 GiB at
    32 users x 50 beams, 0.5B shape). ``drop_finished_users`` removes a user's beams from the batch once its list
    is final (matters for titles, whose items differ in length).

    ``kv_sharing`` says how the ``W`` beams of a user share the prompt's KV cache after the single prefill:

    * ``"expand"``: the cache rows are indexed out to ``[U * W]`` rows (``Cache.reorder_cache``), then reordered
      after each step as ``generate`` does. Works with every attention implementation; copies ``W`` x the
      prompt's KV once per step.
    * ``"tree"``: the cache stays ``[U]`` rows; each step appends the ``W`` new tokens of a user as ``W`` query
      positions of its one sequence, and a 4-D attention mask lets each beam see the prompt and only its own
      ancestors (the beams form a tree; SpecInfer / Medusa tree attention, applied to beam search). No KV copy
      per beam and no reordering. Needs an attention implementation that takes a custom 4-D mask (``sdpa``,
      ``eager``; not ``flash_attention_2``).
    * ``"auto"``: ``"expand"``, the faster one on a GPU. Measured on one H200 (Qwen2.5-0.5B shape, bf16, 256-token
      prompts, 32 users, 50 beams, benchmarks/generative_decoding.py): expand 252 users/s at 8.9 GiB peak, tree
      118 users/s at 4.3 GiB (2.4x slower: SDPA with a custom 4-D mask cannot use the flash kernel). Choose
      ``"tree"`` explicitly when memory, not speed, is the limit (long prompts, many beams).

    Agreement with :func:`hf_generate_beam_search`: identical lists in fp32 (tested; also 8 of 8 users on the
    Qwen2.5-0.5B shape at 20 beams). In bf16 both paths still do the beam arithmetic in fp32 (``generate``'s
    ``_beam_search`` in transformers 5.x casts the last logits to fp32 before ``log_softmax`` and keeps fp32
    beam scores; so does this path), yet their lists differ for two reasons, measured by
    benchmarks/generative_decoding.py (0.5B shape, random init, CPU): (1) the forward passes run other batch
    shapes (our prefill is ``[U, P]``, ``generate``'s ``[U * W, P]``), so the GEMMs sum in another order and the
    bf16 model gives other log-probabilities: the same item's sequence score differs by 1.2e-2 (median) while
    consecutive ranks of the top 11 are 2.0e-3 apart (median smallest gap), so ranks swap. Which batch size
    happens to share ``generate``'s kernels depends on the device: on an H200 32 users per batch agree more
    often than one (81-91% vs 16-31% identical top-10 lists), on CPU less (1 of 8 vs 4 of 8). (2) bf16 logits
    tie exactly (219-236 distinct log-probabilities among 256 first codes), and 8% (20 beams) / 27% (50 beams)
    of users have a tie at the beam boundary of the first step, where ``torch.topk``'s unspecified tie order
    decides which prefix survives. Neither is a difference of the algorithm.

    ``compile_decode`` (``True``, or a ``transformers.CompileConfig``) runs the ``trie.max_len - 1`` decode steps
    after the prefill as ``generate`` does with ``cache_implementation="static"`` (transformers docs, "Caching" and
    "torch.compile"): through ``model.get_compiled_call`` on a ``StaticCache``, the prefill staying eager because
    its shape changes with every prompt width. ``True`` means ``CompileConfig(dynamic=False)``: inductor with
    ``mode="reduce-overhead"``, i.e. CUDA graphs, which removes the per-call host overhead that bounds small
    models; ``fullgraph=False`` as in ``generate``, so a model whose forward breaks the graph still runs (tests
    check Llama and Qwen2 with ``fullgraph=True``). A graph is compiled (and its CUDA graph recorded) for each new
    ``rows = min(users_per_batch, B) * num_beams`` beam rows (a smaller last batch and the rows of finished users
    are padded to it) and ``slots =`` prompt width rounded up to ``STATIC_PROMPT_BUCKET`` ``+ trie.max_len - 1``
    cache positions, so it compiles again for a new ``users_per_batch``, ``num_beams``, prompt bucket, catalogue
    depth, dtype or device (after torch's recompile limit, 8 per function by default, dynamo falls back to
    eager). The cache (``rows x slots`` keys and values per layer) is kept, as ``generate`` keeps its static cache,
    until the model is freed or :func:`release_static_cache` is called, so later calls reuse its buffers and
    graph. Needs ``kv_sharing`` ``"expand"`` (or ``"auto"``). Identical lists and scores in fp32 (tested on CPU
    with ``backend="eager"``). Measured on one H200 (0.5B shape, bf16, 50 beams, 32 users per batch,
    benchmarks/generative_decoding.py): 232 users/s against 368 eager, after 25 s of compilation: the few decode
    steps over ``rows`` beams are not launch-bound there, so it is off by default.

    Returns item indices ``[B, top_k]`` (distinct, never excluded; ``-1`` only when fewer items remain) and their
    sequence log-probabilities ``[B, top_k]`` (fp32, ``-inf`` with ``-1``), best first.
    Raises ``ValueError`` for both/neither prompt kinds, right padding, ``top_k > num_beams``, bad exclusions, an
    unknown ``kv_sharing``, ``"tree"`` with an attention implementation other than ``sdpa`` / ``eager``, or
    ``compile_decode`` with ``"tree"``.
    """
    batch = _check_inputs(input_ids, attention_mask, inputs_embeds, num_beams, top_k, exclude_items)
    if kv_sharing == "auto":
        kv_sharing = "expand"
    if kv_sharing not in ("tree", "expand"):
        raise ValueError(f"kv_sharing={kv_sharing!r}; choose 'auto', 'tree' or 'expand'")
    if kv_sharing == "tree" and _attention_implementation(model) not in ("sdpa", "eager"):
        raise ValueError(f"kv_sharing='tree' needs attn_implementation 'sdpa' or 'eager' (a custom 4-D mask); the "
                         f"model uses {_attention_implementation(model)!r}: use kv_sharing='expand'")
    if compile_decode and kv_sharing == "tree":
        raise ValueError("compile_decode needs kv_sharing='expand' (a tree step's mask changes shape every step)")
    prompts = input_ids if input_ids is not None else inputs_embeds
    if attention_mask is None:
        attention_mask = torch.ones(prompts.shape[:2], dtype=torch.long, device=prompts.device)
    static = None
    if compile_decode:
        config = compile_decode if isinstance(compile_decode, CompileConfig) else CompileConfig(dynamic=False)
        static = _StaticBeamCache(model, config, min(users_per_batch, batch) * num_beams, prompts.shape[1],
                                  trie.max_len - 1)
    results = [], []
    for start in range(0, batch, users_per_batch):
        rows = slice(start, start + users_per_batch)
        excluded = exclude_items[rows] if exclude_items is not None else None
        items, scores = _search(model, trie, prompts[rows], input_ids is not None, attention_mask[rows],
                                num_beams, excluded, drop_finished_users, kv_sharing == "tree", static)
        results[0].append(items[:, :top_k])
        results[1].append(scores[:, :top_k])
    return torch.cat(results[0]), torch.cat(results[1])


def _attention_implementation(model) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) or "eager"


def _forward_logprobs(model, last_only: bool, **inputs) -> tuple[torch.Tensor, object]:
    """``[rows, vocab]`` fp32 log-softmax of the last position's logits (``last_only``) or ``[rows * seq, vocab]``
    of every position's, and the updated KV cache. ``model``: the model or its compiled call.

    The cache goes in as ``past_key_values``: the name both transformers 5.17 (GPU image) and 5.24 accept; 5.24
    renames it ``cache`` and warns (removal announced for 5.40), which is silenced here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*past_key_values.* is deprecated", category=FutureWarning)
        out = model(**inputs, use_cache=True, logits_to_keep=1 if last_only else 0)
    logits = out.logits[:, -1] if last_only else out.logits.flatten(0, 1)
    return torch.log_softmax(logits.float(), dim=-1), out.past_key_values


def _search(model, trie: CatalogTrie, prompts, prompts_are_ids: bool, attention_mask, num_beams: int,
            exclude_items, drop_finished_users: bool, tree: bool, static: _StaticBeamCache | None,
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search for one batch of ``U`` users; returns the finished lists ``[U, W]`` (items, scores), best first.

    State per live user and beam (``R`` live users, ``Bc`` beams each; ``Bc = 1`` right after the prefill):
    ``nodes [R, Bc]`` trie node, ``scores [R, Bc]`` summed log-probability (``-inf`` = empty slot), ``logprobs
    [R * Bc, vocab]`` of the next token. KV cache rows: ``r * Bc + b`` (expand) or ``r`` (tree, where
    ``ancestry [R, Bc, steps]`` holds the slot of each beam's token at every step, and ``slot_offsets`` where
    each step's slots start in the cache). Finished lists ``pool_items / pool_scores [U, W]`` by original user.
    With ``static`` (expand only) the beams' cache rows live in its ``StaticCache`` instead of the prefill's cache.
    """
    device = attention_mask.device
    users, width = attention_mask.shape[0], num_beams
    attention_mask = attention_mask.long()
    positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    remaining = trie.remaining_counts(exclude_items, users)
    prompt_inputs = {"input_ids" if prompts_are_ids else "inputs_embeds": prompts}
    logprobs, cache = _forward_logprobs(model, True, **prompt_inputs, attention_mask=attention_mask,
                                        position_ids=positions)
    mask_dtype = model.get_input_embeddings().weight.dtype

    live = torch.arange(users, device=device)                   # [R] original user of each live row
    nodes = torch.zeros(users, 1, dtype=torch.long, device=device)
    scores = torch.zeros(users, 1, device=device)
    pool_items = torch.full((users, width), -1, dtype=torch.long, device=device)
    pool_scores = torch.full((users, width), NEG_INF, device=device)
    ancestry = torch.zeros(users, 1, 0, dtype=torch.long, device=device)
    slot_offsets: list[int] = []   # tree: where each step's beam tokens start among the generated cache positions
    generated = 0
    for depth in range(trie.max_len):
        beams = nodes.shape[1]
        tokens, children, valid = trie.children(nodes, depth, remaining, live[:, None].expand_as(nodes))
        child_logprobs = logprobs.view(len(live), beams, -1).gather(2, tokens)            # [R, Bc, D]
        candidates = torch.where(valid, scores[..., None] + child_logprobs, NEG_INF).flatten(1)
        kept = min(2 * width, candidates.shape[1])
        top_scores, top = candidates.topk(kept, dim=1)                                   # [R, 2W], best first
        top_nodes = children.flatten(1).gather(1, top)
        top_items = trie.item_of_node[top_nodes]
        completes = (top_items >= 0) & (top_scores > NEG_INF)
        # finished: only completions among the best W candidates count (transformers' rule)
        entering = completes & (torch.arange(kept, device=device) < width)
        merged_scores = torch.cat([pool_scores[live], torch.where(entering, top_scores, NEG_INF)], dim=1)
        merged_items = torch.cat([pool_items[live], torch.where(entering, top_items, -1)], dim=1)
        best, order = merged_scores.topk(width, dim=1)
        pool_scores[live], pool_items[live] = best, merged_items.gather(1, order)
        # running: best W candidates that did not complete an item
        running = torch.where(completes, NEG_INF, top_scores)
        scores, pick = running.topk(min(width, kept), dim=1)
        chosen = top.gather(1, pick)
        parents = chosen // tokens.shape[2]
        nodes = top_nodes.gather(1, pick)
        next_tokens = tokens.flatten(1).gather(1, chosen)
        can_improve = scores[:, 0] > pool_scores[live, -1]      # -inf worst = list not full yet
        if not bool(can_improve.any()) or depth + 1 == trie.max_len:
            break
        kept_rows = torch.arange(len(live), device=device)
        if drop_finished_users and not bool(can_improve.all()):
            kept_rows = can_improve.nonzero().flatten()
            live, scores, nodes, parents, next_tokens, ancestry = (
                t[kept_rows] for t in (live, scores, nodes, parents, next_tokens, ancestry))
        else:
            scores = torch.where(can_improve[:, None], scores, NEG_INF)  # a finished user's list must not change
        new_beams = scores.shape[1]
        if tree:
            if len(kept_rows) < len(can_improve):
                cache.reorder_cache(kept_rows)  # finished users leave the batch
            ancestry = torch.cat([ancestry.gather(1, parents[..., None].expand(-1, -1, ancestry.shape[2])),
                                  torch.arange(new_beams, device=device).expand(len(live), -1)[..., None]], dim=2)
            slot_offsets.append(generated)
            generated += new_beams
            step_mask = _tree_attention_mask(attention_mask[live], ancestry, slot_offsets, generated, mask_dtype)
            step_positions = (positions[live, -1] + depth + 1)[:, None].expand(-1, new_beams)
            logprobs, cache = _forward_logprobs(model, False, input_ids=next_tokens, attention_mask=step_mask,
                                                position_ids=step_positions, past_key_values=cache)
        else:
            rows = (kept_rows[:, None] * beams + parents).flatten()  # KV rows to continue, [R * W]
            beam_users = live.repeat_interleave(new_beams)
            step_tokens, step_positions = next_tokens.reshape(-1, 1), (positions[beam_users, -1] + depth + 1)[:, None]
            if static is None:
                cache.reorder_cache(rows)  # first step: expands each prompt's cache to its W beams (no re-prefill)
                mask = torch.cat([attention_mask[beam_users], attention_mask.new_ones(len(rows), depth + 1)], dim=1)
                logprobs, cache = _forward_logprobs(model, True, input_ids=step_tokens, attention_mask=mask,
                                                    position_ids=step_positions, past_key_values=cache)
            else:
                if depth == 0:
                    static.start(cache, rows)
                    cache = None  # the prompts' keys and values now live in the static cache
                else:
                    static.reorder(rows)
                logprobs = static.logprobs(step_tokens, attention_mask[beam_users], step_positions)
    return pool_items, pool_scores


# one StaticCache per model, kept while the model lives (as generate's), so its buffers and graph are reused
_STATIC_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def release_static_cache(model) -> None:
    """Free the ``StaticCache`` that ``compile_decode`` keeps for ``model`` (a no-op without one). The compiled
    graphs, and under ``mode="reduce-overhead"`` their CUDA graph memory pool, stay with torch.compile until
    ``torch._dynamo.reset()``."""
    _STATIC_CACHES.pop(model, None)


class _StaticBeamCache:
    """The ``expand`` decode steps on a transformers ``StaticCache`` of fixed shape, run by a compiled forward.

    Keys and values per layer: ``[rows, kv_heads, slots, head_dim]``, ``slots = prompt_slots + steps``. A batch's
    prompts are written right-aligned into the first ``prompt_slots`` (left of them is masked, like left padding),
    and decode step ``t`` writes slot ``prompt_slots + t`` (the layers' own counter). Live beams take the first
    rows; the rest repeat row 0 so every step has the same shapes (their outputs are dropped). Rows are reordered
    in place: a compiled graph (and a CUDA graph) reads the cache at fixed addresses.
    """

    def __init__(self, model, compile_config: CompileConfig, rows: int, prompt_width: int, steps: int):
        self.rows, self.steps = rows, steps
        self.prompt_slots = -(-prompt_width // STATIC_PROMPT_BUCKET) * STATIC_PROMPT_BUCKET
        weight = model.get_input_embeddings().weight
        shape = (rows, self.prompt_slots + steps, weight.dtype, weight.device)
        held = _STATIC_CACHES.get(model)
        if held is None or held[0] != shape:
            held = shape, StaticCache(config=model.config, max_cache_len=self.prompt_slots + steps)
            _STATIC_CACHES[model] = held
        self.cache = held[1]
        self.forward = model.get_compiled_call(compile_config)

    def _padded(self, index: torch.Tensor) -> torch.Tensor:
        """``index`` ``[n]`` extended with zeros to ``[rows]``."""
        return torch.cat([index, index.new_zeros(self.rows - len(index))])

    def start(self, prompt_cache, rows: torch.Tensor) -> None:
        """Begin a batch: beam row ``i`` gets the keys and values of prefill row ``rows[i]`` (``rows`` ``[n]``)."""
        self.cache.reset()  # zeroes the buffers and the write position, keeps their addresses
        index = self._padded(rows)
        for layer, prompt in enumerate(prompt_cache.layers):
            left = (0, 0, self.prompt_slots - prompt.keys.shape[2], 0)  # pad the slot dimension on the left
            self.cache.update(F.pad(prompt.keys[index], left), F.pad(prompt.values[index], left), layer)

    def reorder(self, rows: torch.Tensor) -> None:
        """Beam row ``i`` continues row ``rows[i]`` (``[n]``) of the previous step, in place."""
        index = self._padded(rows)
        for layer in self.cache.layers:
            layer.keys.copy_(layer.keys[index])
            layer.values.copy_(layer.values[index])

    def logprobs(self, tokens: torch.Tensor, prompt_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``[n, vocab]`` next-token log-probabilities of ``n`` beam rows after feeding ``tokens`` ``[n, 1]`` at
        ``positions`` ``[n, 1]``; ``prompt_mask`` ``[n, P]`` is each row's prompt attention mask."""
        n = len(tokens)
        index = self._padded(torch.arange(n, device=tokens.device))
        mask = torch.cat([prompt_mask.new_zeros(n, self.prompt_slots - prompt_mask.shape[1]), prompt_mask,
                          prompt_mask.new_ones(n, self.steps)], dim=1)  # decode slots: causality hides the future
        torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs are no longer read
        logprobs, _ = _forward_logprobs(self.forward, True, input_ids=tokens[index], attention_mask=mask[index],
                                        position_ids=positions[index], past_key_values=self.cache)
        return logprobs[:n]


def _tree_attention_mask(prompt_mask: torch.Tensor, ancestry: torch.Tensor, slot_offsets: list[int], generated: int,
                         dtype: torch.dtype) -> torch.Tensor:
    """Additive mask ``[R, 1, Bc, P + generated]`` (0 = attend, dtype min = blocked) for one tree step.

    ``prompt_mask`` ``[R, P]`` (0 = left padding); ``ancestry`` ``[R, Bc, S]``: slot of beam ``b``'s token at each
    of the ``S`` steps so far (the last = its own slot this step); step ``s``'s slots start at ``slot_offsets[s]``
    among the ``generated`` positions the cache holds after prompt (this step's included)."""
    rows, beams, _ = ancestry.shape
    columns = torch.as_tensor(slot_offsets, device=ancestry.device) + ancestry                    # [R, Bc, S]
    allowed = torch.zeros(rows, beams, generated, dtype=torch.bool, device=ancestry.device)
    allowed.scatter_(2, columns, True)
    allowed = torch.cat([prompt_mask.bool()[:, None, :].expand(-1, beams, -1), allowed], dim=2)
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(
        ~allowed, torch.finfo(dtype).min)[:, None]
