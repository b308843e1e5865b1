"""Map collaborative (SASRec) vectors into the LLM's token-embedding space.

SASRecLLM (arXiv 2507.05733) maps a 64-d SASRec embedding with a two-layer MLP ``64 -> d_exp -> d2`` and
reshapes the output into LLM tokens. The paper leaves the details open; we follow CoLLM's mapping layer,
which SASRecLLM's description matches (``proj_token_num`` tokens per ID, ReLU between the layers, and
``d_exp = 5 x 64 = 320`` as CoLLM uses for MovieLens): ``Linear(in, d_exp) -> ReLU -> Linear(d_exp, k * d_model)``,
reshaped to ``k`` tokens of width ``d_model`` per slot.

Initialisation: PyTorch's default init gives outputs whose norm has nothing to do with the LLM's token
embeddings (often 10-100x off). A frozen LLM has never seen such vectors, so the first steps would mostly
fight the scale. ``scale_to_embedding_norm_`` rescales the last layer once, on real inputs, so projected
tokens start with the mean norm of the LLM's own token embeddings (a data-dependent init in the spirit of
LSUV); training is then free to move away from it.
"""

from __future__ import annotations

import torch
from torch import nn


class CollaborativeProjector(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, tokens_per_slot: int = 1):
        super().__init__()
        if min(in_dim, hidden_dim, out_dim, tokens_per_slot) < 1:
            raise ValueError(f"CollaborativeProjector sizes must be positive, got in_dim={in_dim}, "
                             f"hidden_dim={hidden_dim}, out_dim={out_dim}, tokens_per_slot={tokens_per_slot}")
        self.in_dim, self.hidden_dim, self.out_dim, self.tokens_per_slot = in_dim, hidden_dim, out_dim, tokens_per_slot
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, tokens_per_slot * out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., in_dim] -> [..., tokens_per_slot, out_dim]``."""
        return self.mlp(x).unflatten(-1, (self.tokens_per_slot, self.out_dim))

    @property
    def config(self) -> dict:
        return {"in_dim": self.in_dim, "hidden_dim": self.hidden_dim, "out_dim": self.out_dim,
                "tokens_per_slot": self.tokens_per_slot}

    @torch.no_grad()
    def scale_to_embedding_norm_(self, inputs: torch.Tensor, embedding_weight: torch.Tensor) -> float:
        """Rescale the output layer so tokens projected from ``inputs`` have the mean row norm of
        ``embedding_weight`` (the LLM's input embedding matrix). Use the collaborative model's item
        embeddings as ``inputs``. Returns the factor applied."""
        last = self.mlp[-1]
        inputs = inputs.to(device=last.weight.device, dtype=last.weight.dtype)
        current = self(inputs).norm(dim=-1).mean()
        if current == 0:
            raise ValueError("projected inputs are all zero; cannot match a norm (are the inputs all padding?)")
        factor = (embedding_weight.float().norm(dim=-1).mean() / current.float()).item()
        last.weight.mul_(factor)
        last.bias.mul_(factor)
        return factor
