"""SVD of item-embedding tables: the spectral basis the adapters start from, and the collapse diagnostic.

Two uses of one decomposition:

* :func:`spectral_basis` turns the LLM text-embedding matrix into spectral coordinates ``U Σ`` (one row per
  item, one column per component), right singular vectors ``V`` and singular values ``σ``. The SVD top-k
  baseline keeps the first k columns; SpecTran attends over all of them.
* :func:`normalized_spectrum` / :func:`effective_rank` measure *dimension collapse* of an adapted table: a
  collapsed adapter puts almost all energy into a few singular directions, so ``σ_i / σ_1`` falls off a cliff
  and the effective rank is far below the embedding width.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from llmrec_ft.io import atomic_path


def standardize(embeddings: torch.Tensor) -> torch.Tensor:
    """Center the rows and scale so the mean squared row norm is 1.

    LLM hidden states share a large common direction (anisotropy); without centering it becomes the first
    "component" and carries no item-specific signal. The global scale makes every adapter see inputs of the
    same magnitude whatever the LLM's hidden size or activation scale.
    """
    if embeddings.dim() != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"expected a [num_items >= 2, dim] matrix, got shape {tuple(embeddings.shape)}")
    if not torch.isfinite(embeddings).all():
        row = int((~torch.isfinite(embeddings)).any(1).nonzero()[0])
        raise ValueError(f"text embeddings contain NaN/inf (first in item row {row})")
    centered = embeddings.double() - embeddings.double().mean(0, keepdim=True)
    scale = centered.pow(2).sum(1).mean().sqrt()
    if scale == 0:
        raise ValueError("all text embeddings are identical: there is no spectrum to adapt")
    return (centered / scale).float()


@dataclass
class SpectralBasis:
    coordinates: torch.Tensor  # [num_items, r]  U Σ
    right_vectors: torch.Tensor  # [dim, r]  V
    singular_values: torch.Tensor  # [r] descending


def spectral_basis(embeddings: torch.Tensor, rtol: float = 1e-6) -> SpectralBasis:
    """SVD of the standardized ``[num_items, dim]`` matrix, keeping every component with ``σ > rtol·σ_1``.

    Signs follow scikit-learn's ``svd_flip``: the largest-magnitude entry of each ``u_i`` is positive, so the
    same embeddings always give the same basis (an adapter that reads ``v_i`` must not see random signs).
    """
    matrix = standardize(embeddings).double()
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    keep = s > rtol * s[0]
    u, s, vh = u[:, keep], s[keep], vh[keep]
    signs = torch.sign(u.gather(0, u.abs().argmax(0, keepdim=True))).squeeze(0)
    u, vh = u * signs, vh * signs[:, None]
    return SpectralBasis((u * s).float(), vh.T.contiguous().float(), s.float())


@torch.no_grad()
def normalized_spectrum(table: torch.Tensor) -> torch.Tensor:
    """Singular values of the row-centered ``[num_items, dim]`` table divided by the largest (descending)."""
    centered = table.detach().double() - table.detach().double().mean(0, keepdim=True)
    s = torch.linalg.svdvals(centered)
    return (s / s[0]).float() if s[0] > 0 else s.float()


def effective_rank(spectrum: torch.Tensor) -> float:
    """Roy & Vetterli (2007) effective rank: ``exp`` of the entropy of the normalized singular values.

    Equals the width for a flat spectrum and 1 for a rank-one (fully collapsed) table.
    """
    p = spectrum.double() / spectrum.double().sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def plot_spectra(spectra: dict[str, dict[str, list[float]]], path: str | os.PathLike, title: str = "",
                 floor: float = 1e-4) -> None:
    """One panel per group (e.g. backbone), one log-scale line per adapter; written atomically as PNG.

    Values below ``floor`` are drawn at the floor: past that the table is numerically rank-deficient and
    the exact round-off level says nothing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(spectra), figsize=(4.5 * len(spectra), 3.6), squeeze=False, sharey=True)
    for ax, (group, lines) in zip(axes[0], spectra.items()):
        for name, values in lines.items():
            ax.semilogy(range(1, len(values) + 1), [max(value, floor) for value in values], label=name)
        ax.set_ylim(floor / 2, 1.5)
        ax.set_title(group)
        ax.set_xlabel("singular value index")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("σ_i / σ_1 of adapted item embeddings")
    axes[0][-1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
