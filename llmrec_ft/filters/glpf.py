"""G-LPF (Global Graph Low-Pass Filter, FreLLM4Rec §G-LPF): smooth item embeddings over the co-occurrence graph.

With ``A = D^-1/2 W D^-1/2`` the normalised co-occurrence graph (:mod:`llmrec_ft.filters.graph`)::

    X <- ((1 - alpha) I + alpha A)^order X

The authors' code (github.com/BDML-lab/FreLLM4Rec, ``LlamaForRec.get_all_item_embeddings``) applies the
``order = 1`` case, ``(1 - alpha) X + alpha A X`` with ``alpha`` = ``graph_conv_weight``; ``order`` repeats it,
a polynomial of degree ``order`` in ``A``. On an eigenvector of the normalised Laplacian
``L = I - A`` with eigenvalue ``lam`` (the graph frequency) the gain is ``(1 - alpha * lam)^order``.
``W = R^T R`` is a Gram matrix, so ``A`` is positive semi-definite and ``lam`` lies in ``[0, 1]``: the gain
falls monotonically from 1 (smoothest signal) to ``(1 - alpha)^order`` for every ``alpha`` in ``[0, 1]``;
high graph frequencies (embedding differences between items that co-occur) are attenuated, ``alpha``
sets how much and ``order`` how sharply. ``alpha = 0`` is the identity.

Where it is applied: the authors filter each modality right after its input projection. We filter the
frozen item features (SASRec ID embedding and text embedding, side by side) once, before the trainable
fusion MLP. For the linear ID projection that is the same thing (the filter commutes with a linear map);
for the text branch it moves the filter before the MLP. In exchange the filter costs one sparse product
per run instead of one per training step, which matters on CPU.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def graph_low_pass(features: torch.Tensor, adjacency: sp.spmatrix, alpha: float, order: int = 1) -> torch.Tensor:
    """Filter ``features`` ``[num_nodes, d]`` (row i = node i) with ``((1 - alpha) I + alpha A)^order``."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"G-LPF alpha must be in [0, 1], got {alpha}")
    if order < 0 or int(order) != order:
        raise ValueError(f"G-LPF order must be an integer >= 0, got {order}")
    if adjacency.shape != (features.shape[0], features.shape[0]):
        raise ValueError(f"G-LPF: graph of shape {adjacency.shape} for {features.shape[0]} feature rows")
    signal = features.detach().cpu().double().numpy()
    for _ in range(int(order)):
        signal = (1 - alpha) * signal + alpha * (adjacency @ signal)
    return torch.from_numpy(np.ascontiguousarray(signal)).to(features.dtype)
