"""RQ-VAE item tokenizer: an MLP auto-encoder whose latent is residual-quantised (the semantic-ID option of TIGER).

Architecture and loss follow TIGER (arXiv 2305.05065, Sec. 3.1 and 4.1) and RQ-VAE (Lee et al. 2022, arXiv
2203.01941, Sec. 3.1): encoder ``dim -> 512 -> 256 -> 128 -> latent`` (ReLU), ``L`` codebooks of ``K`` vectors in
the latent space, level ``l`` quantises the residual left by levels ``< l``; decoder mirrors the encoder. Loss =
``||x - decode(z_q)||^2 + sum_l ( ||sg[r_l] - e_l||^2 + beta ||r_l - sg[e_l]||^2 )`` with the straight-through
estimator for ``z_q`` and ``beta = 0.25``.

Two fixes against codebook collapse, which TIGER reports as the main failure mode: codebooks are initialised
by k-means on the first batch's residuals (TIGER Sec. 4.1), and after every epoch a code no item chose is
re-seeded with a random residual of the last batch (dead-code restart, as in Jukebox / SoundStream). If a level
still uses less than ``collapse_threshold`` of its codebook at the end, a ``UserWarning`` says so.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn


class RQVAE(nn.Module):
    """``encode`` ``[B, dim] -> [B, latent]``; ``quantize`` ``[B, latent] -> (z_q [B, latent], codes [B, L],
    commitment loss)``; ``decode`` ``[B, latent] -> [B, dim]``."""

    def __init__(self, dim: int, num_levels: int, codebook_size: int, latent_dim: int = 32,
                 hidden: tuple[int, ...] = (512, 256, 128), beta: float = 0.25):
        super().__init__()
        sizes = [dim, *hidden, latent_dim]
        self.encoder = _mlp(sizes)
        self.decoder = _mlp(sizes[::-1])
        self.codebooks = nn.ParameterList(nn.Parameter(torch.randn(codebook_size, latent_dim) * 0.1)
                                          for _ in range(num_levels))
        self.beta = beta

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        residual, quantized, codes, loss = z, torch.zeros_like(z), [], z.new_zeros(())
        for codebook in self.codebooks:
            code = torch.cdist(residual, codebook).argmin(dim=1)
            chosen = codebook[code]
            codebook_loss = ((residual.detach() - chosen) ** 2).mean()
            commitment = ((residual - chosen.detach()) ** 2).mean()
            loss = loss + codebook_loss + self.beta * commitment
            quantized = quantized + chosen
            residual = residual - chosen.detach()
            codes.append(code)
        z_q = z + (quantized - z).detach()  # straight-through estimator
        return z_q, torch.stack(codes, dim=1), loss

    @torch.no_grad()
    def init_codebooks_kmeans_(self, z: torch.Tensor, seed: int) -> None:
        """k-means (scikit-learn) on the residuals of ``z`` ``[B, latent]``, level by level (TIGER Sec. 4.1)."""
        from llmrec_ft.generative.semantic_ids import residual_kmeans

        _, centroids = residual_kmeans(z.cpu().numpy(), len(self.codebooks), self.codebooks[0].shape[0], seed)
        for codebook, centre in zip(self.codebooks, centroids):
            codebook.copy_(torch.as_tensor(centre, dtype=codebook.dtype))


def train_rqvae(embeddings: np.ndarray, num_levels: int, codebook_size: int, seed: int = 0, epochs: int = 200,
                batch_size: int = 1024, lr: float = 1e-3, latent_dim: int = 32, collapse_threshold: float = 0.5,
                device: str = "cpu") -> tuple[np.ndarray, dict]:
    """Train an :class:`RQVAE` on ``embeddings`` ``[N, dim]`` (standardised per column first); return the codes
    ``[N, num_levels]`` of every item and ``info`` (final reconstruction MSE, per-level share of codes used,
    dead codes re-seeded). ``batch_size`` must be at least ``codebook_size`` (k-means init on one batch)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.as_tensor(embeddings, dtype=torch.float32)
    x = ((x - x.mean(0)) / x.std(0).clamp_min(1e-6)).to(device)
    batch_size = min(max(batch_size, codebook_size), len(x))
    model = RQVAE(x.shape[1], num_levels, codebook_size, latent_dim).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    reseeded, initialised = 0, False
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(device)
        used = torch.zeros(num_levels, codebook_size, dtype=torch.bool, device=device)
        for batch in order.split(batch_size):
            z = model.encode(x[batch])
            if not initialised:
                model.init_codebooks_kmeans_(z.detach(), seed)
                initialised = True
            z_q, codes, commitment = model.quantize(z)
            loss = ((model.decode(z_q) - x[batch]) ** 2).mean() + commitment
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            used.scatter_(1, codes.T, True)
        reseeded += _reseed_dead_codes_(model, z.detach(), used, generator)
    model.eval()
    with torch.no_grad():
        z = model.encode(x)
        z_q, codes, _ = model.quantize(z)
        mse = float(((model.decode(z_q) - x) ** 2).mean())
    codes = codes.cpu().numpy()
    usage = [len(np.unique(codes[:, level])) / codebook_size for level in range(num_levels)]
    for level, share in enumerate(usage):
        if share < collapse_threshold:
            warnings.warn(f"RQ-VAE level {level + 1} collapsed: only {share:.0%} of its {codebook_size} codes are "
                          f"used; try more epochs, a smaller codebook or method='rkmeans'", stacklevel=2)
    return codes, {"reconstruction_mse": mse, "codes_used": usage, "dead_codes_reseeded": reseeded,
                   "epochs": epochs}


@torch.no_grad()
def _reseed_dead_codes_(model: RQVAE, z: torch.Tensor, used: torch.Tensor, generator: torch.Generator) -> int:
    """Replace codes unused this epoch by random residuals of ``z`` at their level; returns how many."""
    residual, count = z, 0
    for level, codebook in enumerate(model.codebooks):
        dead = (~used[level]).nonzero().flatten()
        chosen = codebook[torch.cdist(residual, codebook).argmin(dim=1)]
        if len(dead):
            picks = torch.randint(len(residual), (len(dead),), generator=generator).to(residual.device)
            codebook[dead] = residual[picks]
            count += len(dead)
        residual = residual - chosen
    return count


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)
