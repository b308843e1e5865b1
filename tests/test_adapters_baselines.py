import pytest
import torch

from llmrec_ft.adapters import MLPAdapter, SVDTopKAdapter, build_adapter, spectral_basis, standardize


def text_embeddings(num_items=50, dim=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_items, dim, generator=generator) @ torch.randn(dim, dim, generator=generator) + 2.0


def test_standardize_centers_and_scales():
    out = standardize(text_embeddings())
    torch.testing.assert_close(out.mean(0), torch.zeros(32), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pow(2).sum(1).mean(), torch.tensor(1.0))


@pytest.mark.parametrize("kind,hidden", [("linear", None), ("mlp", 64)])
def test_mlp_adapters_shapes_and_gradients(kind, hidden):
    adapter = build_adapter(kind, text_embeddings(), 8, **({} if hidden is None else {"hidden_dim": hidden}))
    assert adapter().shape == (50, 8)
    first_layer = adapter.mlp if hidden is None else adapter.mlp[0]
    assert first_layer.out_features == (8 if hidden is None else hidden)
    adapter().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())


def test_linear_adapter_is_a_linear_map_of_the_standardized_text():
    text = text_embeddings()
    adapter = MLPAdapter(text, 8)
    expected = standardize(text) @ adapter.mlp.weight.T + adapter.mlp.bias
    torch.testing.assert_close(adapter(), expected)


def test_svd_top_k_is_the_frozen_principal_coordinates():
    text = text_embeddings()
    adapter = SVDTopKAdapter(text, 6)
    assert list(adapter.parameters()) == []
    centered = standardize(text).double()
    _, _, vh = torch.linalg.svd(centered, full_matrices=False)
    expected = centered @ vh[:6].T  # PCA scores, up to the sign of each component
    torch.testing.assert_close(adapter().double().abs(), expected.abs(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(adapter(), spectral_basis(text).coordinates[:, :6])
    variances = adapter().var(0)
    assert torch.all(variances[:-1] >= variances[1:])  # the k largest components, in order


def test_svd_top_k_needs_enough_components():
    with pytest.raises(ValueError, match="rank 4"):
        SVDTopKAdapter(text_embeddings(num_items=5, dim=32), 8)  # 5 centered rows have rank 4


def test_build_adapter_defaults_mlp_width_to_four_times_the_output():
    assert build_adapter("mlp", text_embeddings(), 8).mlp[0].out_features == 32
    assert isinstance(build_adapter("linear", text_embeddings(), 8).mlp, torch.nn.Linear)
