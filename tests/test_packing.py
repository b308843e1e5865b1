import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

from llmrec_ft.llm.packing import VARLEN_ATTENTION, PackedCollator, padded_batch_attention, register_varlen_attention

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=97, max_position_embeddings=256)
CONFIGS = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}


def tiny_model(kind: str, attn: str):
    torch.manual_seed(0)
    register_varlen_attention()
    return AutoModelForCausalLM.from_config(CONFIGS[kind](**TINY), attn_implementation=attn).eval()


def samples(lengths=(7, 13, 4), vocab=97):
    generator = torch.Generator().manual_seed(1)
    out = []
    for n in lengths:
        ids = torch.randint(1, vocab, (n,), generator=generator).tolist()
        out.append({"input_ids": ids, "labels": [-100] * (n - 1) + [ids[-1]]})
    return out


def test_collator_layout():
    batch = PackedCollator(row_fields=("cf_history",), concat_fields=("cf_items",))(
        [dict(s, cf_history=[1, 2][: i + 1], cf_items=[10 + i] * (i + 1)) for i, s in enumerate(samples())])
    assert batch["input_ids"].shape == (1, 24)
    assert batch["position_ids"][0].tolist() == list(range(7)) + list(range(13)) + list(range(4))
    assert batch["cu_seq_lens_q"].tolist() == [0, 7, 20, 24] and batch["max_length_q"] == 13
    assert "attention_mask" not in batch
    # the first label of every sample is ignored so no prompt predicts the next prompt's first token
    assert batch["labels"][0, [0, 7, 20]].tolist() == [-100, -100, -100]
    assert batch["cf_history"].tolist() == [[0, 1], [1, 2], [1, 2]]  # left-padded, as SASRec reads histories
    assert batch["cf_items"].tolist() == [[10, 11, 11, 12, 12, 12]]


def test_collator_rejects_mismatched_labels():
    bad = samples()
    bad[1]["labels"] = bad[1]["labels"][:-1]
    with pytest.raises(ValueError, match="sample 1"):
        PackedCollator()(bad)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
@pytest.mark.parametrize("attn", ["sdpa", "eager", VARLEN_ATTENTION])
def test_packed_logits_equal_separate_forwards(kind, attn):
    """No cross-sample attention and correct positions: each packed segment reproduces its own forward."""
    model = tiny_model(kind, attn)
    feats = samples()
    batch = PackedCollator()(feats)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       cu_seq_lens_q=batch["cu_seq_lens_q"], cu_seq_lens_k=batch["cu_seq_lens_k"],
                       max_length_q=batch["max_length_q"], max_length_k=batch["max_length_k"], use_cache=False).logits[0]
        bounds = batch["cu_seq_lens_q"].tolist()
        for sample, start, end in zip(feats, bounds[:-1], bounds[1:]):
            alone = model(input_ids=torch.tensor([sample["input_ids"]])).logits[0]
            torch.testing.assert_close(packed[start:end], alone, atol=1e-5, rtol=1e-4)


def test_varlen_derives_boundaries_from_position_ids():
    """Without the collator's kwargs (e.g. another packing collator), restarting positions still separate."""
    model = tiny_model("qwen2", VARLEN_ATTENTION)
    batch = PackedCollator()(samples())
    with torch.no_grad():
        with_kwargs = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                            cu_seq_lens_q=batch["cu_seq_lens_q"], max_length_q=batch["max_length_q"],
                            use_cache=False).logits
        from_positions = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        leaking = model(input_ids=batch["input_ids"], use_cache=False).logits  # one long sequence: later samples see earlier ones
    torch.testing.assert_close(with_kwargs, from_positions)
    assert not torch.allclose(from_positions[0, 7:], leaking[0, 7:], atol=1e-4)


def test_varlen_rejects_padded_batches():
    model = tiny_model("llama", VARLEN_ATTENTION)
    ids = torch.tensor([[5, 6, 7], [8, 9, 0]])
    with pytest.raises(ValueError, match="padding-free"):
        model(input_ids=ids, attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]))


def test_padded_batch_attention_switches_temporarily():
    model = tiny_model("llama", VARLEN_ATTENTION)
    ids, mask = torch.tensor([[5, 6, 7], [8, 9, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]])
    with torch.no_grad(), padded_batch_attention(model):
        scored = model(input_ids=ids, attention_mask=mask).logits
    assert model.config._attn_implementation == VARLEN_ATTENTION
    reference = tiny_model("llama", "sdpa")
    with torch.no_grad():
        torch.testing.assert_close(scored, reference(input_ids=ids, attention_mask=mask).logits)
