"""Layer-wise low graph-frequency energy: FreLLM4Rec's "intra-layer spectral attenuation" diagnostic.

The paper's claim: feed collaborative item embeddings to a frozen LLM and, layer after layer, the share of
the representation's energy in *low graph frequencies* falls (SASRec keeps or raises it); TFM restores it.
The paper reads frequencies off the "local" graph of a user's history; we could not find its exact energy
formula offline, so this is our definition, stated precisely:

For one user with history items ``s_1..s_T`` (the model's input window) take the local co-occurrence graph
``W_u = W[s, s]`` (with self-loops, see :mod:`llmrec_ft.filters.graph`) and its normalised Laplacian
``L_u = I - D^-1/2 W_u D^-1/2 = U diag(lam) U^T``, ``lam`` ascending. The states ``H`` ``[T, d]`` of a layer
(one row per history item) are a d-channel graph signal; their graph Fourier coefficients are ``U^T H``.
The low-frequency share is the energy of the ``ceil(fraction * T)`` lowest-frequency coefficients over the
total energy (Parseval: the total is ``||H||^2``). It is averaged over users, layer by layer. Before that,
each channel is standardized over all positions of the batch (see :func:`standardize_channels` for why).
A share near 1 means the states vary smoothly over items that co-occur (collaborative structure); a share
near ``fraction`` means no graph structure at all.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from matplotlib.figure import Figure  # the object API needs no display backend (unlike pyplot)
from torch import nn

from llmrec_ft.filters.hooks import map_layer_outputs
from llmrec_ft.io import atomic_path


def low_frequency_bases(items: torch.Tensor, graph: sp.spmatrix, fraction: float = 0.25) -> list[torch.Tensor]:
    """Per user (row of ``items`` ``[B, L]``, 0 = padding), the ``[T, k]`` float64 eigenvectors of the
    ``k = ceil(fraction * T)`` lowest frequencies of the local graph of the T real items."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    graph = graph.tocsr()
    bases = []
    for row in items.cpu().tolist():
        history = [item for item in row if item != 0]
        if not history:
            raise ValueError("low_frequency_bases: a row has no item")
        local = torch.from_numpy(graph[history][:, history].toarray())
        scale = local.sum(1).rsqrt()
        laplacian = torch.eye(len(history), dtype=torch.float64) - scale[:, None] * local * scale[None, :]
        _, vectors = torch.linalg.eigh(laplacian)  # ascending eigenvalues
        bases.append(vectors[:, : math.ceil(fraction * len(history))])
    return bases


def low_frequency_share(states: torch.Tensor, items: torch.Tensor, bases: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[B]`` share of each user's energy in its low-frequency basis; ``states`` ``[B, L, d]`` aligned with
    ``items`` ``[B, L]`` (padding positions are ignored)."""
    shares = []
    for row, basis in enumerate(bases):
        signal = states[row].detach().double().cpu()[items[row].cpu() != 0]
        shares.append((basis.T @ signal).pow(2).sum() / signal.pow(2).sum().clamp_min(1e-300))
    return torch.stack(shares)


@contextlib.contextmanager
def recorded_layer_outputs(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect every decoder layer's output (after TFM, whose hooks run first) into the yielded list."""
    outputs: list[torch.Tensor] = []

    def record(index: int, hidden: torch.Tensor) -> torch.Tensor:
        outputs.append(hidden.detach())
        return hidden

    with map_layer_outputs(model, record):
        yield outputs


def standardize_channels(states: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Each channel centred and scaled over all real positions of the batch (float64, on the CPU).

    Without it the measure is meaningless on an LM: a few "massive activation" channels, and any offset
    shared by every position of every user, are constant signals, i.e. pure lowest-frequency energy, and
    swamp everything else (every layer then reads ~0.98). Removing what is common to the whole batch keeps
    what differs between items, which is what the co-occurrence graph can explain.
    """
    states = states.detach().double().cpu()
    real = items.cpu() != 0
    mean, std = states[real].mean(0), states[real].std(0).clamp_min(1e-12)
    return (states - mean) / std


def layerwise_low_frequency_energy(layer_states: Sequence[torch.Tensor], items: torch.Tensor, graph: sp.spmatrix,
                                   fraction: float = 0.25) -> list[float]:
    """Mean low-frequency share over users of the channel-standardized states (:func:`standardize_channels`)
    for each entry of ``layer_states`` (each ``[B, L, d]``). Signals with no graph structure score about
    ``fraction``."""
    bases = low_frequency_bases(items, graph, fraction)
    return [float(low_frequency_share(standardize_channels(states, items), items, bases).mean())
            for states in layer_states]


def plot_layerwise_energy(curves: dict[str, Sequence[float]], path, fraction: float) -> None:
    """PNG of each curve against relative depth (0 = input embeddings, 1 = last layer), so a 2-block SASRec
    and a 30-layer LLM share one axis."""
    figure = Figure(figsize=(6.4, 4.2))
    axis = figure.subplots()
    for label, values in curves.items():
        depth = np.linspace(0, 1, len(values))
        axis.plot(depth, values, marker="o" if len(values) < 8 else None, label=label)
    axis.set_xlabel("relative depth (0 = input embeddings, 1 = last layer)")
    axis.set_ylabel(f"energy share in lowest {fraction:.0%} graph frequencies")
    axis.set_title("Low graph-frequency energy per layer (local co-occurrence graph)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
