import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

from llmrec_ft.llm.answer_loss import answer_only_loss, answer_positions
from llmrec_ft.llm.packing import PackedCollator

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=101, max_position_embeddings=256)
CONFIGS = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}


def lora_model(kind: str, checkpointing: bool = False):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIGS[kind](**TINY))
    if checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.2x name
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0))
    for name, param in model.named_parameters():  # non-zero B so LoRA gradients are non-trivial everywhere
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    return model


def padded_batch():
    """Right-padded prompts whose last token(s) are labelled, like Yes/No samples (one has two answer tokens)."""
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 101, (3, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    labels = torch.full_like(ids, -100)
    labels[0, 8] = ids[0, 8]
    labels[1, 4:6] = ids[1, 4:6]
    labels[2, 3] = ids[2, 3]
    return ids, mask, labels


def trainable_grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("kind", sorted(CONFIGS))
@pytest.mark.parametrize("checkpointing", [False, True])
def test_equals_transformers_loss_and_gradients(kind, checkpointing):
    model = lora_model(kind, checkpointing).train()
    ids, mask, labels = padded_batch()

    reference = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
    reference.backward()
    expected = trainable_grads(model)
    model.zero_grad()

    out = answer_only_loss(model, labels, input_ids=ids, attention_mask=mask)
    out.loss.backward()
    torch.testing.assert_close(out.loss, reference)
    assert out.logits.shape == (4, 101) and out.targets.tolist() == [ids[0, 8], ids[1, 4], ids[1, 5], ids[2, 3]]
    for name, grad in trainable_grads(model).items():
        torch.testing.assert_close(grad, expected[name], msg=name)


def test_num_items_in_batch_matches_transformers():
    """Gradient accumulation: the Trainer divides the summed loss by the labelled tokens of all micro-batches."""
    model = lora_model("llama")
    ids, mask, labels = padded_batch()
    reference = model(input_ids=ids, attention_mask=mask, labels=labels, num_items_in_batch=10).loss
    ours = answer_only_loss(model, labels, num_items_in_batch=torch.tensor(10), input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(ours.loss, reference)


def test_packed_batch_and_inputs_embeds():
    """Packed rows and inputs_embeds (the collaborative-token path) give the padded batch's loss."""
    model = lora_model("qwen2").eval()
    ids, mask, labels = padded_batch()
    padded = answer_only_loss(model, labels, input_ids=ids, attention_mask=mask).loss
    lengths = mask.sum(1).tolist()
    packed = PackedCollator()([{"input_ids": ids[i, :n].tolist(), "labels": labels[i, :n].tolist()}
                               for i, n in enumerate(lengths)])
    embeds = model.get_input_embeddings()(packed["input_ids"])
    ours = answer_only_loss(model, packed["labels"], inputs_embeds=embeds, position_ids=packed["position_ids"])
    torch.testing.assert_close(ours.loss, padded)


def test_positions_and_errors():
    labels = torch.tensor([[-100, -100, 7, -100], [-100, 5, 6, -100]])
    assert answer_positions(labels).tolist() == [[False, True, False, False], [True, True, False, False]]
    model = lora_model("mistral")
    with pytest.raises(ValueError, match="no supervised token"):
        answer_only_loss(model, torch.full((1, 4), -100), input_ids=torch.ones(1, 4, dtype=torch.long))
