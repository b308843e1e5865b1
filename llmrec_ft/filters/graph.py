"""The item-item co-occurrence graph of the training sequences, and its symmetric normalisation.

As in the FreLLM4Rec authors' code (``GraphBuilder.build_knn_graph_id``): with ``R`` the binary user x item
matrix of the training sequences, ``W = R^T R``, i.e. ``W[i, j]`` = number of users who interacted with
both i and j, and the diagonal ``W[i, i]`` = number of users of i (a self-loop, like GCN's
renormalisation trick; it keeps the spectrum of the normalised adjacency away from -1). Only the *train*
split is used, so the validation/test targets never leak into the graph.

Nodes are indexed by item id, ``0 .. num_items`` (0 = padding). An item without training interactions
(and the padding node) gets a self-loop of weight 1, so it is a node on its own and every graph filter
leaves it unchanged instead of zeroing it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp


def cooccurrence_graph(sequences: Sequence[Sequence[int]], num_items: int) -> sp.csr_matrix:
    """``[num_items + 1, num_items + 1]`` float64 CSR matrix ``W`` (see the module docstring)."""
    rows, cols = [], []
    for user, items in enumerate(sequences):
        unique = sorted(set(items))
        if unique and (unique[0] < 1 or unique[-1] > num_items):
            raise ValueError(f"sequence {user}: item ids must be in 1..{num_items}, got {unique[0]}..{unique[-1]}")
        rows.extend([user] * len(unique))
        cols.extend(unique)
    users_by_items = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(sequences), num_items + 1))
    graph = (users_by_items.T @ users_by_items).tocsr()
    isolated = np.flatnonzero(graph.diagonal() == 0)
    graph = graph + sp.csr_matrix((np.ones(len(isolated)), (isolated, isolated)), shape=graph.shape)
    return graph.tocsr()


def normalized_adjacency(graph: sp.spmatrix) -> sp.csr_matrix:
    """``D^-1/2 W D^-1/2`` (``D`` = row sums); eigenvalues in ``[0, 1]`` for the PSD ``W = R^T R``.

    The normalised Laplacian is ``I - D^-1/2 W D^-1/2``: low graph frequencies (eigenvalues near 0) are the
    signals that vary little between items that co-occur.
    """
    degree = np.asarray(graph.sum(1)).ravel()
    if (degree <= 0).any():
        raise ValueError(f"graph node {int(np.flatnonzero(degree <= 0)[0])} has no edge; use cooccurrence_graph")
    scale = sp.diags(1 / np.sqrt(degree))
    return (scale @ graph @ scale).tocsr()
