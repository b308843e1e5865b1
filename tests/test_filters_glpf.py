import numpy as np
import pytest
import torch

from llmrec_ft.filters.glpf import graph_low_pass
from llmrec_ft.filters.graph import cooccurrence_graph, normalized_adjacency

SEQUENCES = [[1, 2, 3], [2, 3], [3, 4, 4], [1, 3]]  # item 5 never appears; user 2 repeats item 4


def test_cooccurrence_counts_users_and_gives_isolated_nodes_a_self_loop():
    graph = cooccurrence_graph(SEQUENCES, num_items=5).toarray()
    assert graph.shape == (6, 6) and (graph == graph.T).all()
    assert graph[3, 3] == 4  # four users have item 3
    assert graph[1, 3] == 2 and graph[2, 3] == 2 and graph[1, 4] == 0
    assert graph[4, 4] == 1  # a repeat inside one user counts once
    assert graph[0, 0] == 1 and graph[5, 5] == 1 and graph[0].sum() == 1 and graph[5].sum() == 1


def test_out_of_range_item_names_the_sequence():
    with pytest.raises(ValueError, match="sequence 1"):
        cooccurrence_graph([[1, 2], [0, 3]], num_items=3)


def test_normalized_adjacency_spectrum_is_in_zero_one():
    adjacency = normalized_adjacency(cooccurrence_graph(SEQUENCES, num_items=5)).toarray()
    eigenvalues = np.linalg.eigvalsh(adjacency)
    assert eigenvalues.min() > -1e-9 and abs(eigenvalues.max() - 1) < 1e-9


@pytest.mark.parametrize("alpha,order", [(0.7, 1), (0.3, 3), (1.0, 2)])
def test_gain_on_each_eigenvector_is_the_polynomial(alpha, order):
    adjacency = normalized_adjacency(cooccurrence_graph(SEQUENCES, num_items=5))
    eigenvalues, eigenvectors = np.linalg.eigh(adjacency.toarray())
    filtered = graph_low_pass(torch.from_numpy(eigenvectors), adjacency, alpha, order).numpy()
    expected_gain = (1 - alpha + alpha * eigenvalues) ** order  # = (1 - alpha * lam)^order, lam = 1 - eigenvalue
    np.testing.assert_allclose(filtered, eigenvectors * expected_gain, atol=1e-12)


def test_high_graph_frequencies_lose_more_energy_than_low_ones():
    adjacency = normalized_adjacency(cooccurrence_graph(SEQUENCES, num_items=5))
    eigenvalues, eigenvectors = np.linalg.eigh(adjacency.toarray())
    smooth, rough = eigenvectors[:, -1:], eigenvectors[:, :1]  # eigenvalue 1 (lam 0) vs the smallest
    gain = lambda v: np.linalg.norm(graph_low_pass(torch.from_numpy(v), adjacency, 0.5, 2).numpy())
    assert gain(smooth) == pytest.approx(1.0) and gain(rough) < 0.5


def test_identity_cases_and_dtype():
    adjacency = normalized_adjacency(cooccurrence_graph(SEQUENCES, num_items=5))
    features = torch.randn(6, 3)
    assert torch.equal(graph_low_pass(features, adjacency, 0.0, 3), features)
    assert torch.equal(graph_low_pass(features, adjacency, 0.7, 0), features)
    assert graph_low_pass(features, adjacency, 0.7, 1).dtype == torch.float32


@pytest.mark.parametrize("kwargs,match", [(dict(alpha=1.5), "alpha"), (dict(order=-1), "order"),
                                          (dict(rows=4), "feature rows")])
def test_bad_arguments(kwargs, match):
    adjacency = normalized_adjacency(cooccurrence_graph(SEQUENCES, num_items=5))
    features = torch.randn(kwargs.pop("rows", 6), 2)
    with pytest.raises(ValueError, match=match):
        graph_low_pass(features, adjacency, **(dict(alpha=0.5, order=1) | kwargs))
