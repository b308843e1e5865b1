import pytest
import torch
from torch import nn

from llmrec_ft.adapters import (FusedItemEmbedding, SpecTranAdapter, SpectralPositionEncoding, attach_adapter,
                                build_adapter, effective_rank, normalized_spectrum, plot_spectra, spectral_basis)


def known_spectrum(num_items=40, dim=24, singular_values=None, seed=0):
    """A centered matrix U diag(s) V^T with a chosen spectrum (so standardization only rescales it)."""
    generator = torch.Generator().manual_seed(seed)
    s = torch.linspace(3.0, 0.1, dim) if singular_values is None else singular_values
    centered = torch.randn(num_items, num_items, generator=generator)
    centered -= centered.mean(0, keepdim=True)  # columns orthogonal to the all-ones vector -> centered rows
    u = torch.linalg.qr(centered)[0][:, :dim]
    v = torch.linalg.qr(torch.randn(dim, dim, generator=generator))[0]
    return (u * s) @ v.T + 5.0  # a common offset, like an LLM's shared direction


def test_spectral_basis_reconstructs_standardized_embeddings_with_deterministic_signs():
    text = known_spectrum()
    basis = spectral_basis(text)
    centered = text - text.mean(0)
    standardized = centered / centered.pow(2).sum(1).mean().sqrt()
    torch.testing.assert_close(basis.coordinates @ basis.right_vectors.T, standardized, atol=1e-5, rtol=1e-5)
    assert torch.all(basis.singular_values[:-1] >= basis.singular_values[1:])
    flipped = spectral_basis(-text)  # same subspace, opposite signs: the sign convention undoes the flip
    torch.testing.assert_close(flipped.coordinates, basis.coordinates, atol=1e-5, rtol=1e-5)


def test_spectran_shapes_and_full_spectrum():
    text = known_spectrum(num_items=40, dim=24)
    adapter = SpecTranAdapter(text, output_dim=8, model_dim=16, num_heads=2)
    assert adapter.num_components == 24  # every nonzero component, not a top-k
    assert adapter.component_tokens().shape == (24, 16)
    assert adapter.attention().shape == (8, 24)
    assert adapter().shape == (40, 8)


def test_spectran_gradients_reach_every_parameter():
    torch.manual_seed(0)
    adapter = SpecTranAdapter(known_spectrum(), output_dim=8, model_dim=16, num_heads=2, dropout=0.0, shrink=0.05)
    target = torch.randn(40, 8)
    (adapter() - target).pow(2).mean().backward()
    for name, param in adapter.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert all(not buffer.requires_grad for buffer in adapter.buffers())


def test_softshrink_readout_is_sparse_signed_and_lambda_controls_it():
    torch.manual_seed(0)
    sparse = SpecTranAdapter(known_spectrum(), output_dim=8, model_dim=16, num_heads=2, dropout=0.0).eval()
    weights = sparse.sparse_attention()
    assert (weights == 0).any() and (weights > 0).any() and (weights < 0).any()
    assert sparse.shrink == pytest.approx(0.5)
    torch.manual_seed(0)
    dense = SpecTranAdapter(known_spectrum(), output_dim=8, model_dim=16, num_heads=2, dropout=0.0, shrink=0.0)
    assert (dense.eval().sparse_attention() != 0).float().mean() > (weights != 0).float().mean()
    weights.abs().sum().backward()  # the threshold is learned (the paper's learnable λ)
    assert sparse.shrink_threshold.grad is not None and sparse.shrink_threshold.grad != 0


def test_position_encoding_is_a_diagonal_function_of_the_singular_values():
    """The paper's A: diagonal on the first d components, A_jj a polynomial of σ_j only."""
    encoding = SpectralPositionEncoding(3, order=3)
    with torch.no_grad():
        encoding.coefficients.copy_(torch.tensor([0.1, 0.5, -0.3, 0.2]))
    s = torch.tensor([4.0, 2.0, 2.0, 1.0, 0.5])
    out = encoding(s).detach()
    assert out.shape == (3, 5)
    torch.testing.assert_close(out, torch.diag(torch.diag(out)[:3]) @ torch.eye(3, 5))  # zero off the diagonal
    assert out[1, 1] == out[2, 2]  # equal singular values, equal weights, whatever the index
    x = s[0] / 4.0
    assert out[0, 0] == pytest.approx(float(0.1 + 0.5 * x - 0.3 * x**2 + 0.2 * x**3))
    changed = encoding(torch.tensor([4.0, 2.0, 3.0, 1.0, 0.5])).detach()
    assert changed[2, 2] != out[2, 2]
    torch.testing.assert_close(changed[:2], out[:2])
    wide = SpectralPositionEncoding(8)(s).detach()  # more output dimensions than components: extra rows are zero
    assert wide.shape == (8, 5) and not wide[5:].any()


def test_spectran_starts_as_svd_top_k_and_follows_the_spectrum():
    """With the attention term at zero, A's initial polynomial (σ/σ_1) makes E_s exactly U_d Σ_d."""
    torch.manual_seed(0)
    text = known_spectrum()
    adapter = SpecTranAdapter(text, output_dim=8, model_dim=16, num_heads=2)
    with torch.no_grad():
        adapter.queries.zero_()
    torch.testing.assert_close(adapter(), build_adapter("svd", text, 8)(), atol=1e-5, rtol=1e-5)
    s = torch.linspace(3.0, 0.1, 24)
    s2 = s.clone()
    s2[5] = 2.45  # stays between its neighbours (2.50, 2.37), so the order of components is unchanged
    encodings = []
    for values in (s, s2):
        torch.manual_seed(0)
        adapter = SpecTranAdapter(known_spectrum(singular_values=values), output_dim=8, model_dim=16, num_heads=2)
        encodings.append(adapter.position_encoding().detach())
    diff = (encodings[0] - encodings[1]).abs()
    assert diff[5, 5] > 1e-3
    diff[5, 5] = 0
    assert torch.all(diff < 1e-5)


def test_spectran_learns_a_target_mapping():
    torch.manual_seed(0)
    text = known_spectrum()
    adapter = SpecTranAdapter(text, output_dim=4, model_dim=16, num_heads=2, dropout=0.0, shrink=0.05)
    # each output picks one component, tail ones included, with its own sign and scale
    target = spectral_basis(text).coordinates[:, [1, 7, 12, 20]] * torch.tensor([1.0, -2.0, 3.0, 1.5])
    optimizer = torch.optim.Adam(adapter.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss = (adapter() - target).pow(2).mean()
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first


def test_fused_item_embedding_adds_text_only_to_real_items():
    torch.manual_seed(0)
    text = known_spectrum(num_items=40)
    ids = nn.Embedding(42, 8, padding_idx=0)  # 0 = pad, 1..40 items, 41 = BERT4Rec's [MASK]
    fused = FusedItemEmbedding(ids, build_adapter("svd", text, 8)).eval()
    lookup = torch.tensor([[0, 1, 40, 41]])
    out = fused(lookup)
    table = fused.adapter()
    torch.testing.assert_close(out[0, 0], ids.weight[0])
    torch.testing.assert_close(out[0, 1], ids.weight[1] + table[0])
    torch.testing.assert_close(out[0, 2], ids.weight[40] + table[39])
    torch.testing.assert_close(out[0, 3], ids.weight[41])
    torch.testing.assert_close(fused.weight[lookup[0]], out[0])


def test_fusion_rejects_mismatched_sizes_and_models_without_item_table():
    text = known_spectrum(num_items=40)
    with pytest.raises(ValueError, match="output_dim=4"):
        FusedItemEmbedding(nn.Embedding(41, 8), build_adapter("linear", text, 4))
    with pytest.raises(ValueError, match="cover 40 items"):
        FusedItemEmbedding(nn.Embedding(30, 8), build_adapter("linear", text, 8))
    with pytest.raises(TypeError, match="item_embeddings"):
        attach_adapter(nn.Linear(2, 2), build_adapter("linear", text, 8))
    with pytest.raises(ValueError, match="unknown adapter 'pca'"):
        build_adapter("pca", text, 8)


def test_spectrum_diagnostics_detect_collapse(tmp_path):
    torch.manual_seed(0)
    collapsed = torch.randn(100, 1) @ torch.randn(1, 16) + 1e-6 * torch.randn(100, 16)
    noise = torch.randn(100, 16)
    spread = torch.linalg.qr(noise - noise.mean(0))[0] * 10 + 3.0  # orthogonal, centered columns
    low, flat = normalized_spectrum(collapsed), normalized_spectrum(spread)
    assert low[0] == 1 and low[1] < 1e-4 and effective_rank(low) < 1.1
    assert flat.min() > 0.9 and effective_rank(flat) > 15.5
    path = tmp_path / "spectrum.png"
    plot_spectra({"sasrec": {"mlp": low.tolist(), "spectran": flat.tolist()}}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_text_embeddings_are_named():
    text = known_spectrum()
    text[3, 2] = float("nan")
    with pytest.raises(ValueError, match="item row 3"):
        SpecTranAdapter(text, output_dim=8)
    with pytest.raises(ValueError, match="identical"):
        SpecTranAdapter(torch.ones(10, 4), output_dim=2)
    with pytest.raises(ValueError, match="divisible"):
        SpecTranAdapter(known_spectrum(), output_dim=8, model_dim=10, num_heads=3)


def test_no_output_dimension_starts_dead():
    """Softshrink has no gradient inside [-λ, λ]: at initialization every row must have active entries."""
    torch.manual_seed(0)
    adapter = SpecTranAdapter(known_spectrum(), output_dim=16, model_dim=16, num_heads=2, dropout=0.0, shrink=0.5)
    weights = adapter.sparse_attention()
    assert torch.all((weights != 0).any(1))
    weights.abs().sum().backward()
    assert torch.all(adapter.queries.grad.abs().sum(1) > 0)
