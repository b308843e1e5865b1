"""Causal-LM loss computed only at the positions that carry a label.

Why: a Yes/No recommender supervises one token per prompt, yet ``model(labels=...)`` projects *every*
position onto the vocabulary and upcasts those logits to fp32 before the cross-entropy. For Qwen2.5
(152k-word vocabulary) and 8 prompts of 600 tokens that is 8*600*152k*4 B = 2.9 GB per copy, several
copies with the backward, and the LM head's matmul over all positions (7% of a 7B model's FLOPs, 28% of
a 0.5B one's). Here the decoder runs as usual, its hidden states are gathered at the positions whose
*next* token is labelled, and only those rows go through the LM head.

The result is transformers' ``ForCausalLMLoss`` exactly: labels are shifted by one, ``-100`` is ignored,
the loss is the mean over labelled tokens, or their sum divided by ``num_items_in_batch`` when the
Trainer passes it (gradient accumulation). Padded ``[B, T]`` and packed ``[1, sum(T_i)]`` batches both
work, since positions are taken from ``labels`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


def split_causal_lm(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Return ``(decoder, lm_head)`` of a plain or PEFT-wrapped Hugging Face causal LM.

    LoRA layers live inside these modules, so calling them directly keeps the adapters active.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    if head is None or decoder is base:
        raise TypeError(f"{type(base).__name__} is not a causal LM with a separate decoder and LM head")
    return decoder, head


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """Boolean mask ``[B, T]`` of the positions whose next token is labelled (the causal shift)."""
    shifted = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    return shifted != IGNORE_INDEX


@dataclass
class AnswerOutput:
    """``logits`` holds one row per labelled token, in row-major order of ``answer_positions``."""

    loss: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor


def answer_only_loss(model: nn.Module, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None,
                     **decoder_inputs) -> AnswerOutput:
    """Run ``model``'s decoder on ``decoder_inputs`` (input_ids or inputs_embeds, attention_mask,
    position_ids, attention kwargs...) and return the next-token loss over the labelled positions only."""
    decoder, head = split_causal_lm(model)
    hidden = decoder(**decoder_inputs, use_cache=False).last_hidden_state
    keep = answer_positions(labels)
    if not keep.any():
        raise ValueError("labels contain no supervised token (all -100 after the causal shift)")
    targets = labels[:, 1:][keep[:, :-1]]
    logits = head(hidden[keep]).float()
    softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    if softcap:  # Gemma-2 style models cap logits before the loss; do the same so losses match
        logits = softcap * torch.tanh(logits / softcap)
    if num_items_in_batch is None:
        loss = F.cross_entropy(logits, targets)
    else:
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(logits.device)
        loss = F.cross_entropy(logits, targets, reduction="sum") / num_items_in_batch
    return AnswerOutput(loss=loss, logits=logits, targets=targets)
