"""Code tokens: one new vocabulary entry per (level, code) of the semantic IDs, e.g. ``<a_17><b_3><c_200><d_0>``.

Level ``l`` uses letter ``l`` (``a`` = first level, the last letter = the collision-separating level), as in
LC-Rec and MiniOneRec, so the same code at two levels is two different tokens. Every code of every codebook
gets a token (not only the used ones): the vocabulary then depends on the codebook sizes alone.

Their rows in the input and output embeddings must train while the rest of the LM stays frozen under LoRA:
PEFT's ``LoraConfig(trainable_token_indices=...)`` (PEFT >= 0.15, ``TrainableTokensLayer``) trains and saves
exactly those rows of the input embedding and, for tied models, of the LM head that shares it. For untied
models (Qwen2.5-7B, Llama) pass ``{"embed_tokens": ids, "lm_head": ids}``: :func:`trainable_token_indices`
does this from the model.
"""

from __future__ import annotations

import string

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llmrec_ft.generative.semantic_ids import SemanticIDs


def level_token(level: int, code: int) -> str:
    """``"<a_17>"`` for level 0 (0-based), code 17."""
    if not 0 <= level < len(string.ascii_lowercase):
        raise ValueError(f"level {level} outside 0..25 (one letter per level)")
    return f"<{string.ascii_lowercase[level]}_{code}>"


def vocabulary(sids: SemanticIDs) -> list[str]:
    """Every code token, level by level: ``sum(codebook_sizes)`` strings."""
    return [level_token(level, code) for level, size in enumerate(sids.codebook_sizes) for code in range(size)]


def code_tokens(sids: SemanticIDs) -> list[list[str]]:
    """Per item (row of ``sids.codes``) its tokens, e.g. ``["<a_17>", "<b_3>", "<c_200>", "<d_0>"]``."""
    return [[level_token(level, int(code)) for level, code in enumerate(row)] for row in sids.codes]


def add_code_tokens(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None, sids: SemanticIDs
                    ) -> torch.LongTensor:
    """Add every code token to ``tokenizer`` (and grow ``model``'s embeddings); return the item token matrix.

    Returns ``[num_items, num_levels + 1]`` token ids (row ``i`` = item ``i``), what :class:`CatalogTrie` takes.
    Idempotent (tokens already present are reused). New input and output rows are set to exactly the mean of
    the old rows (as ``llmrec_ft.llm.tokens.add_collaborative_tokens``): a start close to the existing
    distribution, and deterministic, so a base model rebuilt before loading an adapter has the same rows.
    Call before ``peft.get_peft_model`` / ``PeftModel.from_pretrained``. ``model=None`` only updates the tokenizer.
    """
    tokens = vocabulary(sids)
    tokenizer.add_tokens(tokens, special_tokens=False)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if model is not None:
        old_rows = model.get_input_embeddings().weight.shape[0]
        if max(ids) + 1 > old_rows:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            with torch.no_grad():
                for layer in (model.get_input_embeddings(), model.get_output_embeddings()):
                    if layer is not None:  # tied: the same weight written twice, harmless
                        layer.weight[old_rows:] = layer.weight[:old_rows].mean(dim=0)
    lookup = dict(zip(tokens, ids))
    return torch.tensor([[lookup[t] for t in row] for row in code_tokens(sids)], dtype=torch.long)


def trainable_token_indices(tokenizer: PreTrainedTokenizerBase, sids: SemanticIDs,
                            model: PreTrainedModel | None = None) -> list[int] | dict[str, list[int]]:
    """Token ids of every code token, for ``LoraConfig(trainable_token_indices=...)``.

    With ``model`` given and its LM head *not* tied to the input embedding, returns ``{input_embedding_name: ids,
    output_embedding_name: ids}`` so the head rows train too; otherwise the plain list (PEFT then targets the
    input embedding, and a tied head follows it). Raises ``KeyError`` if the tokens were never added.
    """
    tokens = vocabulary(sids)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise KeyError("code tokens are not in the tokenizer; call add_code_tokens first")
    if model is None or model.get_output_embeddings() is None or \
            model.get_output_embeddings().weight is model.get_input_embeddings().weight:
        return ids
    names = {module: name.rsplit(".", 1)[-1] for name, module in model.named_modules()}
    return {names[model.get_input_embeddings()]: ids, names[model.get_output_embeddings()]: ids}
