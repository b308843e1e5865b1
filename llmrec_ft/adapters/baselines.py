"""The two families SpecTran is compared with, behind the same interface (``forward() -> [num_items, dim]``).

* :class:`MLPAdapter` -- a learnable projection (linear, or a one-hidden-layer MLP) from the LLM space to the
  item space, as in UniSRec/LLM-ESR-style adapters. Trained end to end; this is the *dimension-collapse* case.
* :class:`SVDTopKAdapter` -- the top-k principal coordinates ``U_k Σ_k`` of the text embeddings, frozen, as in
  SVD/PCA initialisation methods (e.g. LLMInit). Nothing is learned; this is the *cherry-picking* case.

Both standardize the text embeddings exactly as SpecTran does, so the comparison only varies the mapping.
"""

from __future__ import annotations

import torch
from torch import nn

from llmrec_ft.adapters.spectrum import spectral_basis, standardize


class MLPAdapter(nn.Module):
    """``Linear(D, d)`` when ``hidden_dim`` is None, else ``Linear(D, h) -> GELU -> Dropout -> Linear(h, d)``."""

    def __init__(self, text_embeddings: torch.Tensor, output_dim: int, hidden_dim: int | None = None,
                 dropout: float = 0.1):
        super().__init__()
        self.num_items, self.output_dim = text_embeddings.shape[0], output_dim
        self.register_buffer("text", standardize(text_embeddings))
        dim = text_embeddings.shape[1]
        if hidden_dim is None:
            self.mlp = nn.Linear(dim, output_dim)
        else:
            self.mlp = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(hidden_dim, output_dim))

    def forward(self) -> torch.Tensor:
        return self.mlp(self.text)


class SVDTopKAdapter(nn.Module):
    """Frozen top-``output_dim`` spectral coordinates of the text embeddings (no parameters)."""

    def __init__(self, text_embeddings: torch.Tensor, output_dim: int):
        super().__init__()
        basis = spectral_basis(text_embeddings)
        if basis.coordinates.shape[1] < output_dim:
            raise ValueError(f"SVD top-k: the text embeddings have rank {basis.coordinates.shape[1]}, "
                             f"fewer than output_dim={output_dim} components")
        self.num_items, self.output_dim = text_embeddings.shape[0], output_dim
        self.register_buffer("table", basis.coordinates[:, :output_dim].contiguous())

    def forward(self) -> torch.Tensor:
        return self.table
