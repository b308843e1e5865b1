import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from llmrec_ft.filters.hooks import decoder_layers, map_layer_outputs
from llmrec_ft.filters.tfm import (butterworth_gain, butterworth_operator, temporal_frequency_modulation,
                                   temporal_low_pass)

ARCHS = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
         "mistral": (MistralConfig, MistralForCausalLM)}


def tiny_lm(arch="llama", layers=2):
    config_cls, model_cls = ARCHS[arch]
    torch.manual_seed(0)
    config = config_cls(hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=50, max_position_embeddings=64)
    return model_cls(config).eval()


def fft_reference(x, cutoff, order):
    """Direct formula: irfft(H * rfft(x)) along dim 0, H = 1/sqrt(1 + (w/wc)^(2n)), w = 2k/n."""
    n = x.shape[0]
    w = 2 * torch.arange(n // 2 + 1, dtype=torch.float64) / n
    gain = 1 / torch.sqrt(1 + (w / cutoff) ** (2 * order))
    return torch.fft.irfft(torch.fft.rfft(x, dim=0) * gain[:, None], n=n, dim=0)


@pytest.mark.parametrize("length", [1, 2, 7, 10, 20])
@pytest.mark.parametrize("cutoff,order", [(0.1, 2), (0.5, 1), (0.3, 4)])
def test_operator_is_the_fft_butterworth_filter(length, cutoff, order):
    x = torch.randn(length, 5, dtype=torch.float64)
    torch.testing.assert_close(butterworth_operator(length, cutoff, order) @ x, fft_reference(x, cutoff, order))


def test_gain_is_one_at_dc_half_power_at_cutoff_and_decreasing():
    gain = butterworth_gain(20, cutoff=0.2, order=3)  # bins at w = 0, 0.1, 0.2, ...
    assert gain[0] == 1 and torch.isclose(gain[2], torch.tensor(2 ** -0.5, dtype=torch.float64))
    assert (gain.diff() < 0).all()


def test_constant_passes_and_alternating_is_attenuated():
    constant = torch.ones(10, 1, dtype=torch.float64)
    alternating = torch.tensor([(-1.0) ** t for t in range(10)], dtype=torch.float64)[:, None]
    operator = butterworth_operator(10, 0.1, 2)
    torch.testing.assert_close(operator @ constant, constant)
    torch.testing.assert_close(operator @ alternating, alternating * butterworth_gain(10, 0.1, 2)[-1])


def test_padding_aware_left_right_and_nan_padding():
    torch.manual_seed(0)
    real = torch.randn(1, 6, 4)
    alone = temporal_low_pass(real, torch.ones(1, 6), cutoff=0.2, order=2)
    padding = torch.full((1, 3, 4), float("nan"))
    left = temporal_low_pass(torch.cat([padding, real], 1), torch.tensor([[0] * 3 + [1] * 6]), cutoff=0.2, order=2)
    right = temporal_low_pass(torch.cat([real, padding], 1), torch.tensor([[1] * 6 + [0] * 3]), cutoff=0.2, order=2)
    torch.testing.assert_close(left[:, 3:], alone)
    torch.testing.assert_close(right[:, :6], alone)
    assert torch.isnan(left[:, :3]).all()  # padding passes through untouched
    assert not torch.allclose(alone, real)


def test_strength_mixes_with_the_unfiltered_states():
    x, mask = torch.randn(2, 8, 3), torch.ones(2, 8)
    torch.testing.assert_close(temporal_low_pass(x, mask, 0.2, 2, strength=0.0), x)
    half = temporal_low_pass(x, mask, 0.2, 2, strength=0.5)
    torch.testing.assert_close(half, 0.5 * x + 0.5 * temporal_low_pass(x, mask, 0.2, 2))


@pytest.mark.parametrize("bad", [dict(cutoff=0.0), dict(cutoff=1.5), dict(order=0), dict(strength=2.0)])
def test_bad_arguments_are_rejected(bad):
    kwargs = dict(cutoff=0.1, order=2, strength=1.0) | bad
    with pytest.raises(ValueError, match="TFM"):
        temporal_low_pass(torch.randn(1, 4, 2), torch.ones(1, 4), **kwargs)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_hooks_filter_every_layer_and_leave_the_model_bit_identical(arch):
    model = tiny_lm(arch)
    decoder = model.get_decoder()
    embeds, mask = torch.randn(2, 6, 32), torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6])
    with torch.no_grad():
        # Installs transformers' own output-capturing hooks first: ours must still run before them.
        before = decoder(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True)
        hooks = [dict(layer._forward_hooks) for layer in decoder_layers(model)]
        with temporal_frequency_modulation(model, mask, cutoff=0.2, order=2):
            during = decoder(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True)
        after = decoder(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True)
    assert [dict(layer._forward_hooks) for layer in decoder_layers(model)] == hooks
    assert torch.equal(before.last_hidden_state, after.last_hidden_state)
    assert not torch.allclose(before.last_hidden_state, during.last_hidden_state)
    # hidden_states[1] is layer 0's output: with TFM it is the filtered version of the plain one.
    torch.testing.assert_close(during.hidden_states[1], temporal_low_pass(before.hidden_states[1], mask, 0.2, 2))


def test_hooks_are_removed_on_error():
    model = tiny_lm()
    counts = [len(layer._forward_hooks) for layer in decoder_layers(model)]
    with pytest.raises(RuntimeError, match="boom"):
        with temporal_frequency_modulation(model, torch.ones(1, 3), cutoff=0.5):
            raise RuntimeError("boom")
    assert [len(layer._forward_hooks) for layer in decoder_layers(model)] == counts


def test_kv_cache_shaped_input_is_a_clear_error():
    model = tiny_lm()
    with (temporal_frequency_modulation(model, torch.ones(1, 5), cutoff=0.5),
          pytest.raises(ValueError, match="KV cache")):
        model.get_decoder()(inputs_embeds=torch.randn(1, 1, 32))


def test_layers_are_found_under_peft_and_tfm_applies():
    model = get_peft_model(tiny_lm(layers=3), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert len(decoder_layers(model)) == 3
    seen = []
    with map_layer_outputs(model, lambda index, hidden: seen.append(index) or hidden):
        model(input_ids=torch.tensor([[1, 2, 3]]))
    assert seen == [0, 1, 2]
