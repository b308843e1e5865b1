"""Placeholder tokens that mark where collaborative (ID-model) vectors enter the prompt.

A prompt carries ``<|user_cf|>`` where the user's SASRec representation goes and ``<|item_cf|>`` after an
item title where that item's SASRec embedding goes. They are registered as *special* tokens so the
tokenizer never splits them, and ``CollaborativeLM`` finds them by id and overwrites their embeddings.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

USER_CF_TOKEN = "<|user_cf|>"
ITEM_CF_TOKEN = "<|item_cf|>"


class CollaborativeTokenIds(NamedTuple):
    user: int
    item: int


def add_collaborative_tokens(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> CollaborativeTokenIds:
    """Register the placeholders on ``tokenizer`` and grow ``model``'s embeddings to match; idempotent.

    Call it on the base model *before* ``peft.get_peft_model`` (and before loading an adapter), so the
    adapter is saved against the grown vocabulary. New rows are set to exactly the mean of the existing
    rows (transformers' ``mean_resizing`` samples around it): input rows are overwritten by projected
    vectors anyway, but output rows still produce logits, and a deterministic value lets a reloaded model
    reproduce the same losses bit for bit without saving the whole embedding matrix with the adapter.
    """
    tokenizer.add_tokens([USER_CF_TOKEN, ITEM_CF_TOKEN], special_tokens=True)
    ids = CollaborativeTokenIds(user=tokenizer.convert_tokens_to_ids(USER_CF_TOKEN),
                                item=tokenizer.convert_tokens_to_ids(ITEM_CF_TOKEN))
    old_rows = model.get_input_embeddings().weight.shape[0]
    needed = max(ids) + 1
    if needed > old_rows:
        # Models often pad their vocabulary beyond the tokenizer (Qwen2: 151936 rows for ~151650 tokens);
        # then the placeholder ids already have rows and nothing needs resizing.
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            for layer in (model.get_input_embeddings(), model.get_output_embeddings()):
                if layer is not None:  # tied layers share one weight; writing it twice is harmless
                    layer.weight[old_rows:] = layer.weight[:old_rows].mean(dim=0)
    return ids
