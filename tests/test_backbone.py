import pytest
import torch
from test_prompts import tiny_tokenizer
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.utils import is_bitsandbytes_available, is_flash_attn_2_available

from llmrec_ft.llm import backbone
from llmrec_ft.llm.backbone import EMBEDDED_MODEL, embedded_model_dir, load_backbone


@pytest.fixture
def tiny_dir(tmp_path):
    """A tiny Llama checkpoint whose tokenizer has no pad token, as many base models ship."""
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = None
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=len(tokenizer))).save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def test_loads_a_local_checkpoint_with_a_pad_token_and_requested_dtype(tiny_dir):
    model, tokenizer = load_backbone(tiny_dir, dtype="bfloat16")
    assert isinstance(model, LlamaForCausalLM) and model.dtype == torch.bfloat16
    assert model.config._attn_implementation == "sdpa"
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert not model.is_activation_checkpointing


def test_gradient_checkpointing_still_gives_lora_gradients(tiny_dir):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_backbone(tiny_dir, gradient_checkpointing=True)
    assert model.is_activation_checkpointing and model.config.use_cache is False
    model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    model.train()
    ids = torch.tensor([tokenizer("Will the user like Fargo?")["input_ids"]])
    model(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_options_reach_from_pretrained_and_remote_code_stays_off(tiny_dir, monkeypatch):
    calls = []
    real = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    load_backbone(tiny_dir, attn_implementation="eager")
    load_backbone(tiny_dir, trust_remote_code=True)
    assert calls[0]["trust_remote_code"] is False and calls[0]["attn_implementation"] == "eager"
    assert calls[0]["quantization_config"] is None and calls[0]["dtype"] == torch.float32
    assert calls[1]["trust_remote_code"] is True


def test_unavailable_options_fail_with_a_clear_message(tiny_dir):
    with pytest.raises(ValueError, match="dtype='float8' is not supported"):
        load_backbone(tiny_dir, dtype="float8")
    with pytest.raises(ValueError, match="mutually exclusive"):
        load_backbone(tiny_dir, load_in_4bit=True, load_in_8bit=True)
    if not is_bitsandbytes_available():
        with pytest.raises(ImportError, match="needs bitsandbytes"):
            load_backbone(tiny_dir, load_in_4bit=True)
    if not is_flash_attn_2_available():
        with pytest.raises(ImportError, match="needs the flash-attn package"):
            load_backbone(tiny_dir, attn_implementation="flash_attention_2")


def test_embedded_name_resolves_to_the_cached_conversion_without_reconverting(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMREC_FT_CACHE", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "models" / EMBEDDED_MODEL
    cached.parent.mkdir(parents=True)
    tiny_dir.rename(cached)

    def no_conversion(*args, **kwargs):
        raise AssertionError("a cached conversion must not be redone")

    monkeypatch.setattr(backbone, "join_split_file", no_conversion)
    assert embedded_model_dir() == cached
    model, tokenizer = load_backbone(EMBEDDED_MODEL)
    assert model.config.hidden_size == 64 and tokenizer.pad_token is not None


def test_options_are_checked_without_loading_and_name_what_they_accept(tiny_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from llmrec_ft.llm.backbone import check_backbone_options

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # a Hub lookup fails at once

    check_backbone_options(tiny_dir, "bfloat16", "eager")  # a saved model folder passes
    with pytest.raises(ValueError, match=r"dtype='float8' is not supported; use one of \['bf16', 'bfloat16'"):
        check_backbone_options(tiny_dir, dtype="float8")
    with pytest.raises(ValueError, match=r"attn_implementation='flash' is not supported; use one of \['eager'"):
        check_backbone_options(tiny_dir, attn_implementation="flash")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="model_name_or_path=.*empty': this folder has no config.json"):
        check_backbone_options(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"backbone='smollm2' is not an embedded model \(\['smollm2-135m-instruct'"):
        check_backbone_options("smollm2", name_field="backbone")  # a typo: neither embedded, a folder nor cached
    with pytest.raises(ValueError, match="all-minilm-l6-v2' is a sentence_encoder, not a causal LM"):
        check_backbone_options("all-minilm-l6-v2")
