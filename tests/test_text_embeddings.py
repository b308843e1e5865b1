import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast,
                          Qwen2Config, Qwen2ForCausalLM)

from llmrec_ft.llm import text_embeddings
from llmrec_ft.llm.text_embeddings import (embed_item_texts, encoder_kind, item_text_embeddings,
                                           text_embedding_cache_path)

WORDS = "toy story 1995 genres animation comedy heat drama thriller jumanji adventure".split()
TEXTS = ["toy story 1995 genres animation comedy", "heat", "jumanji genres adventure", "drama thriller"]
ARCHS = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
}


def word_tokenizer():
    vocab = {"[UNK]": 0, "</s>": 1, **{word: i + 2 for i, word in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>")


def tiny_lm(arch="llama"):
    config_cls, model_cls = ARCHS[arch]
    torch.manual_seed(0)
    config = config_cls(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=len(WORDS) + 2, max_position_embeddings=64)
    return model_cls(config).eval()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMREC_FT_CACHE", str(tmp_path))


def one_by_one(model, tokenizer, texts, layer, pooling):
    """Reference: each text alone (no padding at all), pooled by hand."""
    rows = []
    for text in texts:
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[layer][0]
        rows.append(hidden.mean(0) if pooling == "mean" else hidden[-1])
    return torch.stack(rows)


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("pooling,layer", [("mean", -1), ("last", -1), ("mean", 1)])
def test_batched_padded_pooling_matches_unpadded_reference(arch, pooling, layer):
    model, tokenizer = tiny_lm(arch), word_tokenizer()
    got = item_text_embeddings(model, tokenizer, TEXTS, f"tiny-{arch}", batch_size=3, layer=layer, pooling=pooling)
    with torch.no_grad():
        expected = one_by_one(model, tokenizer, TEXTS, layer, pooling)
    assert got.shape == (len(TEXTS), 32) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_second_call_reads_the_cache_without_running_the_model():
    model, tokenizer = tiny_lm(), word_tokenizer()
    first = item_text_embeddings(model, tokenizer, TEXTS, "tiny-llama")
    assert text_embedding_cache_path(TEXTS, "tiny-llama", -1, "mean", 128).exists()

    def boom(*args, **kwargs):
        raise AssertionError("model must not run on a cache hit")

    model.get_decoder().forward = boom
    torch.testing.assert_close(item_text_embeddings(model, tokenizer, TEXTS, "tiny-llama"), first)
    with pytest.raises(AssertionError, match="must not run"):  # a different key misses the cache
        item_text_embeddings(model, tokenizer, TEXTS, "tiny-llama", pooling="last")


def test_restores_training_mode_and_needs_no_gradients():
    model, tokenizer = tiny_lm().train(), word_tokenizer()
    out = item_text_embeddings(model, tokenizer, TEXTS[:2], "tiny-llama")
    assert model.training and not out.requires_grad


def test_bad_input_is_named():
    model, tokenizer = tiny_lm(), word_tokenizer()
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        item_text_embeddings(model, tokenizer, ["heat", ""], "tiny-llama")
    with pytest.raises(ValueError, match="pooling"):
        item_text_embeddings(model, tokenizer, TEXTS, "tiny-llama", pooling="max")


def test_embed_item_texts_on_a_causal_lm_dir_loads_it_once_and_then_reads_the_cache(tmp_path, monkeypatch):
    model, tokenizer = tiny_lm("llama"), word_tokenizer()  # (a Qwen2 config would make AutoTokenizer rebuild it)
    model.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    name = str(tmp_path / "lm")
    assert encoder_kind(name) == "causal_lm"
    got = embed_item_texts(TEXTS, name, pooling="last", batch_size=3)
    with torch.no_grad():
        expected = one_by_one(model, tokenizer, TEXTS, -1, "last")
    assert got.shape == (len(TEXTS), 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)  # not normalised: a causal LM's raw state

    monkeypatch.setattr(text_embeddings, "load_text_encoder", lambda *a: pytest.fail("a cache hit loads no model"))
    torch.testing.assert_close(embed_item_texts(TEXTS, name, pooling="last"), got)
    with pytest.raises(ValueError, match=r"text 2 \(1-based\) is empty"):
        embed_item_texts(["heat", " "], name)


def test_a_local_sentence_transformers_folder_is_a_sentence_encoder(tmp_path):
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "modules.json").write_text("[]")
    assert encoder_kind(str(tmp_path / "st")) == "sentence_encoder"
    assert encoder_kind("all-minilm-l6-v2") == "sentence_encoder" and encoder_kind("gemma3-270m") == "causal_lm"
