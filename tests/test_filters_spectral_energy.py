import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llmrec_ft.filters.graph import cooccurrence_graph
from llmrec_ft.filters.spectral_energy import (layerwise_low_frequency_energy, low_frequency_bases,
                                               low_frequency_share, plot_layerwise_energy, recorded_layer_outputs)


def random_graph(num_items=30, users=40, seed=0):
    rng = np.random.default_rng(seed)
    return cooccurrence_graph([rng.choice(np.arange(1, num_items + 1), 8, replace=False).tolist()
                               for _ in range(users)], num_items)


def local_spectrum(graph, history):
    local = graph.tocsr()[history][:, history].toarray()
    scale = 1 / np.sqrt(local.sum(1))
    return np.linalg.eigh(np.eye(len(history)) - scale[:, None] * local * scale[None, :])


def test_signals_built_from_low_or_high_frequencies_score_one_or_zero():
    graph, history = random_graph(), [3, 7, 1, 12, 5, 9, 20, 2]
    _, vectors = local_spectrum(graph, history)
    items = torch.tensor([history])
    bases = low_frequency_bases(items, graph, fraction=0.25)  # the 2 lowest of 8
    assert bases[0].shape == (8, 2)
    low = torch.from_numpy(vectors[:, :2] @ np.random.randn(2, 5))[None]
    high = torch.from_numpy(vectors[:, 2:] @ np.random.randn(6, 5))[None]
    assert low_frequency_share(low, items, bases).item() == pytest.approx(1.0)
    assert low_frequency_share(high, items, bases).item() == pytest.approx(0.0, abs=1e-12)
    mixed = low_frequency_share(low + high, items, bases).item()
    assert 0 < mixed < 1 and mixed == pytest.approx(low.pow(2).sum().item() / (low + high).pow(2).sum().item())


def test_padding_is_ignored_and_fraction_sets_the_basis_size():
    graph = random_graph()
    states = torch.randn(1, 6, 4)
    padded_items = torch.tensor([[0, 0, 4, 8, 15, 16, 23, 24]])
    padded_states = torch.cat([torch.randn(1, 2, 4), states], 1)
    plain = layerwise_low_frequency_energy([states], torch.tensor([[4, 8, 15, 16, 23, 24]]), graph, 0.5)
    padded = layerwise_low_frequency_energy([padded_states], padded_items, graph, 0.5)
    assert plain == pytest.approx(padded)
    assert low_frequency_bases(padded_items, graph, 0.5)[0].shape == (6, math.ceil(0.5 * 6))
    with pytest.raises(ValueError, match="fraction"):
        low_frequency_bases(padded_items, graph, 0.0)


def test_recorder_sees_every_layer_and_is_removed():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                         num_attention_heads=2, num_key_value_heads=1, vocab_size=20)).eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        reference = model.get_decoder()(input_ids=ids, output_hidden_states=True)
        with recorded_layer_outputs(model) as outputs:
            model.get_decoder()(input_ids=ids)
        after = model.get_decoder()(input_ids=ids)
    assert len(outputs) == 3
    torch.testing.assert_close(outputs[0], reference.hidden_states[1])
    assert torch.equal(after.last_hidden_state, reference.last_hidden_state)


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "energy.png"
    plot_layerwise_energy({"LLM": [0.9, 0.7, 0.5, 0.4], "SASRec": [0.9, 0.95, 0.97]}, path, fraction=0.25)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_standardized_measure_ignores_batch_wide_offsets_and_scores_noise_near_fraction():
    graph, rng = random_graph(), np.random.default_rng(1)
    items = torch.tensor(np.stack([rng.choice(np.arange(1, 31), 8, replace=False) for _ in range(64)]))
    noise = torch.randn(64, 8, 16, dtype=torch.float64)
    offset = torch.zeros(16, dtype=torch.float64)
    offset[3] = 1e4  # a "massive activation" channel, the same at every position
    plain, shifted = layerwise_low_frequency_energy([noise, noise + offset], items, graph, fraction=0.25)
    assert plain == pytest.approx(0.25, abs=0.05)
    assert shifted == pytest.approx(plain, abs=1e-6)
