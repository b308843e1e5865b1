"""InfoNCE (sampled softmax with a temperature) for training ID backbones, with or without a text adapter.

SpecTran (arXiv 2601.21986) trains its backbones with InfoNCE. Our reading of the paper is second-hand (a
summary, not the paper's equations), so the form here is the standard one, not a transcription:

    loss = -log( exp(<h, e_pos> / tau) / (exp(<h, e_pos> / tau) + sum_k exp(<h, e_neg_k> / tau)) )

with ``h`` the backbone's state at a position, ``e`` rows of the (possibly text-fused) item table, and
``num_negatives`` negatives drawn uniformly from the catalogue per position (padding never drawn; a negative
equal to the positive is masked out). Dot products rather than cosines, because the toolkit scores items by
dot product at evaluation; ``tau`` then only rescales the logits (``tau = 1`` with the full catalogue as
negatives is the full cross-entropy). Every item lookup goes through ``item_embeddings(ids)``, so a fused
adapter receives gradients from the sampled rows only -- the point of sampling with large catalogues.

Enable it on any :class:`~llmrec_ft.collab.base.SequentialRecommender` through its config:
``train_loss="infonce"``, ``infonce_negatives``, ``infonce_temperature`` (:func:`infonce_config`).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def infonce_config(num_negatives: int = 256, temperature: float = 0.1) -> dict:
    """Config keys that switch a backbone's training loss to InfoNCE (pass them to its ``*Config``)."""
    if num_negatives < 1 or not temperature > 0:
        raise ValueError(f"need num_negatives >= 1 and temperature > 0, got {num_negatives} and {temperature}")
    return {"train_loss": "infonce", "infonce_negatives": num_negatives, "infonce_temperature": temperature}


def sampled_softmax_loss(states: torch.Tensor, targets: torch.Tensor, item_embeddings: Callable[[torch.Tensor], torch.Tensor],
                         num_items: int, num_negatives: int, temperature: float,
                         negatives: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE over ``[positive, negatives]`` (see the module docstring).

    ``states``: ``[N, H]``; ``targets``: ``[N]`` item ids in ``1..num_items``; ``item_embeddings``: ids ``[...]``
    -> ``[..., H]``; ``negatives``: ``[N, K]`` ids to use instead of uniform samples (tests). Returns the mean
    loss (a scalar). Raises ``ValueError`` on bad sizes."""
    if states.shape[0] != targets.shape[0]:
        raise ValueError(f"{states.shape[0]} states for {targets.shape[0]} targets")
    if negatives is None:
        negatives = torch.randint(1, num_items + 1, (len(targets), num_negatives), device=targets.device)
    positive = (states * item_embeddings(targets)).sum(-1, keepdim=True)
    negative = torch.einsum("nh,nkh->nk", states, item_embeddings(negatives))
    negative = negative.masked_fill(negatives.eq(targets[:, None]), float("-inf"))
    logits = torch.cat([positive, negative], dim=1).float() / temperature
    return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=logits.device))
