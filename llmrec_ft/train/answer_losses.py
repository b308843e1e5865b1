"""Which loss trains the Yes/No answer: ``yes_no_ce`` (TALLRec) or ``yes_bce`` (CoLLM / SASRecLLM's code).

* ``yes_no_ce``: the causal-LM cross-entropy of the answer token over the whole vocabulary -- what
  ``model(labels=...)`` computes; scored by ``sigmoid(logit_yes - logit_no)``.
* ``yes_bce``: binary cross-entropy on the raw "Yes" logit at the answer position,
  ``BCEWithLogits(logit_yes, label)``, scored by ``sigmoid(logit_yes)``. This is CoLLM's ``forward_v2``
  (zyang1580/CoLLM, ``minigpt4/models/minigpt4rec_v2.py``: ``logits[:, -t_posi, :][:, pos_ans_id]`` into
  ``binary_cross_entropy_with_logits``), which SASRecLLM's authors train with. The "No" logit and the rest of
  the vocabulary get no gradient: the LM only has to move one logit, at the cost of no longer being a
  language model at that position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ANSWER_LOSSES = ("yes_no_ce", "yes_bce")


def answer_logits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits [N, V], targets [N])`` at the labelled positions (next-token shift applied).

    ``logits`` is either ``[B, T, V]`` (a plain causal-LM forward) or already ``[N, V]``, one row per
    labelled token in row-major order (``CollaborativeLM`` with ``answer_only_loss``); ``labels``: ``[B, T]``
    with -100 where there is no loss."""
    shifted = labels[:, 1:]
    keep = shifted.ne(-100)
    targets = shifted[keep]
    if logits.dim() == 3:
        logits = logits[:, :-1][keep]
    if logits.shape[0] != targets.shape[0]:
        raise ValueError(f"{logits.shape[0]} logit rows for {targets.shape[0]} labelled tokens")
    return logits, targets


def yes_bce_loss(logits: torch.Tensor, labels: torch.Tensor, yes_id: int,
                 num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    """BCE of the "Yes" logit against ``target == yes_id`` (see the module docstring); ``logits`` and ``labels``
    as in :func:`answer_logits`. With ``num_items_in_batch`` (Trainer's count over the accumulated batch)
    the sum is divided by it, as the cross-entropy path does, so gradient accumulation gives the same mean."""
    rows, targets = answer_logits(logits, labels)
    if rows.shape[0] == 0:
        raise ValueError("labels contain no supervised token (all -100 after the causal shift)")
    yes_logit = rows[:, yes_id].float()
    liked = targets.eq(yes_id).float()
    if num_items_in_batch is None:
        return F.binary_cross_entropy_with_logits(yes_logit, liked)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(yes_logit.device)
    return F.binary_cross_entropy_with_logits(yes_logit, liked, reduction="sum") / num_items_in_batch
