import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors import safe_open
from test_prompts import TITLES, tiny_tokenizer
from torch import nn
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Trainer, TrainingArguments)

from llmrec_ft.llm.collaborative_lm import CollaborativeLM
from llmrec_ft.llm.packing import PackedCollator
from llmrec_ft.llm.projector import CollaborativeProjector
from llmrec_ft.llm.prompts import encode_prompt, load_prompt
from llmrec_ft.llm.tokens import CollaborativeTokenIds, add_collaborative_tokens

ARCHS = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
         "mistral": (MistralConfig, MistralForCausalLM)}
K = 2  # tokens per slot
NUM_ITEMS = 12
ITEM_TITLES = [None, *TITLES, "Fargo (1996)"]  # item id -> title


class TinyCollab(nn.Module):
    """Stand-in for SASRec: item embeddings, and a user representation = mean of the history's embeddings."""

    def __init__(self, hidden: int = 8):
        super().__init__()
        torch.manual_seed(1)
        self.item_embeddings = nn.Embedding(NUM_ITEMS + 1, hidden, padding_idx=0)

    def sequence_representation(self, input_ids):
        mask = (input_ids > 0).unsqueeze(-1).float()
        return (self.item_embeddings(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)


def tiny_lm(arch: str, vocab_size: int, tie: bool = True):
    config_cls, model_cls = ARCHS[arch]
    torch.manual_seed(0)
    return model_cls(config_cls(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=512,
                                tie_word_embeddings=tie))


def build(arch="llama", lora=True, checkpointing=False):
    tokenizer = tiny_tokenizer()
    lm = tiny_lm(arch, len(tokenizer))
    token_ids = add_collaborative_tokens(tokenizer, lm)
    if lora:
        lm = get_peft_model(lm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(2)
    model = CollaborativeLM(lm, CollaborativeProjector(8, 16, 64, tokens_per_slot=K), TinyCollab(), token_ids)
    if checkpointing:
        model.gradient_checkpointing_enable()
    return model, tokenizer


def batch(tokenizer, with_cf=True):
    """Two left-padded Yes/No prompts (3 and 1 history items) with their collaborative inputs."""
    template, rows = load_prompt("yes_no"), []
    for history, candidate in (([1, 2, 3], 4), ([5], 6)):
        prompt = template.render(tokenizer, [ITEM_TITLES[i] for i in history], [True] * len(history),
                                 ITEM_TITLES[candidate], with_collaborative_tokens=with_cf, cf_tokens_per_slot=K)
        rows.append((encode_prompt(tokenizer, prompt.text), history, prompt.cf_item_ids(history, candidate)))
    width = max(len(ids) for ids, _, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids, _, _ in rows])
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids, _, _ in rows])
    out = {"input_ids": input_ids, "attention_mask": attention_mask}
    if with_cf:
        out["cf_history"] = torch.tensor([h + [0] * (3 - len(h)) for _, h, _ in rows])
        out["cf_items"] = torch.tensor([c + [0] * (4 - len(c)) for _, _, c in rows])
    return out


def test_add_collaborative_tokens_is_idempotent_and_initialises_rows_deterministically():
    tokenizer = tiny_tokenizer()
    lm = tiny_lm("llama", len(tokenizer), tie=False)
    old_in, old_out = lm.get_input_embeddings().weight.clone(), lm.get_output_embeddings().weight.clone()
    first = add_collaborative_tokens(tokenizer, lm)
    assert first == CollaborativeTokenIds(user=len(old_in), item=len(old_in) + 1)
    assert add_collaborative_tokens(tokenizer, lm) == first
    assert lm.get_input_embeddings().weight.shape[0] == len(old_in) + 2
    for old, new in ((old_in, lm.get_input_embeddings().weight), (old_out, lm.get_output_embeddings().weight)):
        torch.testing.assert_close(new[:len(old)], old)
        torch.testing.assert_close(new[len(old):], old.mean(0).expand(2, -1))
    assert tokenizer.tokenize("a<|item_cf|>b").count("<|item_cf|>") == 1


def test_no_resize_when_the_model_already_has_spare_rows():
    tokenizer = tiny_tokenizer()
    lm = tiny_lm("qwen2", len(tokenizer) + 16)  # Qwen-style padded vocabulary
    weight = lm.get_input_embeddings().weight
    add_collaborative_tokens(tokenizer, lm)
    assert lm.get_input_embeddings().weight is weight


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_exactly_the_placeholder_positions_are_replaced(arch):
    model, tokenizer = build(arch)
    inputs = batch(tokenizer)
    seen = {}
    hook = model.lm.get_base_model().model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True)
    model(**inputs)
    hook.remove()

    plain = model.lm.get_input_embeddings()(inputs["input_ids"])
    is_slot = (inputs["input_ids"] == model.token_ids.user) | (inputs["input_ids"] == model.token_ids.item)
    torch.testing.assert_close(seen["embeds"][~is_slot], plain[~is_slot])
    collab = model.collab_model
    users = model.projector(collab.sequence_representation(inputs["cf_history"]))      # [2, K, 64]
    items = model.projector(collab.item_embeddings(inputs["cf_items"]))                 # [2, 4, K, 64]
    for row in range(2):
        ids = inputs["input_ids"][row]
        torch.testing.assert_close(seen["embeds"][row][ids == model.token_ids.user], users[row])
        n_items = int((inputs["cf_items"][row] > 0).sum())
        torch.testing.assert_close(seen["embeds"][row][ids == model.token_ids.item], items[row, :n_items].flatten(0, 1))


def test_collaborative_vectors_are_float32_under_bf16_autocast():
    """Mixed-precision training keeps the collaborative model and projector in float32: the injected vectors are
    exactly the float32 ones, while the decoder runs in bf16."""
    model, tokenizer = build()
    inputs = batch(tokenizer)
    reference = model.embed(inputs["input_ids"], inputs["cf_history"], inputs["cf_items"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.embed(inputs["input_ids"], inputs["cf_history"], inputs["cf_items"])
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference, atol=0, rtol=0)


def test_zero_projections_change_logits_only_from_the_first_placeholder_on():
    model, tokenizer = build(lora=False)
    with torch.no_grad():
        model.projector.mlp[-1].weight.zero_()
        model.projector.mlp[-1].bias.zero_()
    inputs = batch(tokenizer)
    model.eval()
    with torch.no_grad():
        injected = model(**inputs).logits
        plain = model.lm(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    for row in range(2):
        ids, valid = inputs["input_ids"][row], inputs["attention_mask"][row].bool()
        first = int(((ids == model.token_ids.user) | (ids == model.token_ids.item)).nonzero()[0])
        before = valid & (torch.arange(len(ids)) < first)
        torch.testing.assert_close(injected[row][before], plain[row][before])
        differs = (injected[row] - plain[row]).abs().amax(-1) > 1e-4
        assert differs[first:].all() and not differs[before].any()


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradients_reach_projector_collab_model_and_lora_while_the_base_is_frozen(checkpointing):
    model, tokenizer = build(checkpointing=checkpointing)
    model.train()
    inputs = batch(tokenizer)
    model(**inputs, labels=inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)).loss.backward()

    for name, param in model.named_parameters():
        if "lora_" in name or name.startswith(("projector.", "collab_model.")):
            assert param.grad is not None, name
            if "lora_A" not in name:  # lora_B starts at zero, which makes lora_A's first gradient zero
                assert param.grad.abs().sum() > 0, name
        else:
            assert not param.requires_grad and param.grad is None, name
    assert model.lm.get_base_model().is_activation_checkpointing == checkpointing


def test_text_only_prompts_train_lora_under_checkpointing():
    model, tokenizer = build(checkpointing=True)
    model.train()
    inputs = batch(tokenizer, with_cf=False)
    assert not ((inputs["input_ids"] == model.token_ids.item) | (inputs["input_ids"] == model.token_ids.user)).any()
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_grads and all(g is not None and g.abs().sum() > 0 for g in lora_grads)
    assert all(p.grad is None for p in model.projector.parameters())


def test_generate_continues_from_the_injected_prompt():
    model, tokenizer = build()
    model.eval()
    inputs = batch(tokenizer)
    new_tokens = model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert new_tokens.shape == (2, 3)
    with torch.no_grad():
        first = model(**inputs).logits[:, -1].argmax(-1)
    assert torch.equal(new_tokens[:, 0], first)


def test_packed_batches_inject_in_prompt_order_and_match_the_padded_logits():
    model, tokenizer = build()
    model.eval()
    padded = batch(tokenizer)
    samples = []
    for row in range(2):
        keep = padded["attention_mask"][row].bool()
        samples.append({"input_ids": padded["input_ids"][row][keep].tolist(),
                        "cf_history": [i for i in padded["cf_history"][row].tolist() if i],
                        "cf_items": [i for i in padded["cf_items"][row].tolist() if i]})
    packed = PackedCollator(row_fields=("cf_history",), concat_fields=("cf_items",))(samples)
    assert packed["input_ids"].shape[0] == 1 and packed["cf_history"].shape[0] == 2
    with torch.no_grad():
        expected = model(**padded).logits[padded["attention_mask"].bool()]
        got = model(**packed, use_cache=False).logits[0]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    packed["cf_history"] = packed["cf_history"].repeat(2, 1)  # 4 histories for 2 packed prompts
    with pytest.raises(ValueError, match=r"packed batch: input_ids holds 4 <\|user_cf\|> placeholders but "
                                         r"cf_history gives 8 vectors"):
        model(**packed, use_cache=False)


def test_answer_only_loss_equals_the_full_loss():
    model, tokenizer = build()
    inputs = batch(tokenizer)
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, -1] = inputs["input_ids"][:, -1]  # one supervised token per row
    full = model(**inputs, labels=labels)
    model.answer_only_loss = True
    answer_only = model(**inputs, labels=labels)
    torch.testing.assert_close(answer_only.loss, full.loss)
    assert answer_only.logits.shape == (2, full.logits.shape[-1])
    torch.testing.assert_close(answer_only.logits, full.logits[:, -2].float())


def test_placeholder_count_mismatch_names_the_batch_row():
    model, tokenizer = build()
    inputs = batch(tokenizer)
    inputs["cf_items"][1, 1] = 0  # row 1 has 2 item slots but now supplies 1 item
    with pytest.raises(ValueError, match=r"batch row 1: input_ids holds 4 <\|item_cf\|> placeholders but "
                                         r"cf_items gives 2 vectors"):
        model(**inputs)
    del inputs["cf_history"]
    with pytest.raises(ValueError, match=r"batch row 0: input_ids holds 2 <\|user_cf\|> placeholders"):
        model(**inputs)


def test_save_and_reload_reproduce_the_logits(tmp_path):
    model, tokenizer = build()
    with torch.no_grad():  # make the adapter non-trivial (LoRA B starts at zero)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_()
    model.eval()
    inputs = batch(tokenizer)
    with torch.no_grad():
        expected = model(**inputs).logits
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "trainer_state.json").write_text("{}")
    model.save_pretrained(tmp_path / "run")

    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "projector.safetensors", "collaborative_lm.json",
            "collab_model", "trainer_state.json"} <= files  # other files in the folder survive
    with safe_open(tmp_path / "run" / "adapter_model.safetensors", "pt") as adapter:
        assert not any("embed_tokens" in key or "lm_head" in key for key in adapter.keys())

    fresh_tokenizer = tiny_tokenizer()
    reloaded = CollaborativeLM.from_pretrained(tmp_path / "run", tiny_lm("llama", len(fresh_tokenizer)),
                                               fresh_tokenizer, TinyCollab(hidden=8)).eval()
    in_place, _ = build()
    in_place.load_pretrained_weights(tmp_path / "run")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected)
        torch.testing.assert_close(in_place.eval()(**inputs).logits, expected)

    bigger = CollaborativeLM(in_place.lm, CollaborativeProjector(8, 32, 64, tokens_per_slot=K), TinyCollab(),
                             in_place.token_ids)
    with pytest.raises(ValueError, match="saved projector .* does not match"):
        bigger.load_pretrained_weights(tmp_path / "run")


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


class CollaborativeTrainer(Trainer):
    """The two hooks a recipe overrides so checkpoints hold adapter + projector + ID model, and resume restores them
    (Trainer's default would dump the whole wrapper's state dict, which fails on tied embeddings)."""

    def _save(self, output_dir=None, state_dict=None):
        self.model.save_pretrained(output_dir or self.args.output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        (model or self.model).load_pretrained_weights(resume_from_checkpoint)


def train(tmp_path, max_steps, resume_from_checkpoint=None):
    model, tokenizer = build()
    inputs = batch(tokenizer)
    inputs["labels"] = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    rows = [{key: value[i] for key, value in inputs.items()} for i in range(2)]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=max_steps, per_device_train_batch_size=2,
                             learning_rate=1e-2, gradient_checkpointing=True, save_steps=1, report_to=[],
                             use_cpu=True, remove_unused_columns=False, seed=0)
    CollaborativeTrainer(model=model, args=args, train_dataset=ListDataset(rows),
                         data_collator=lambda items: {k: torch.stack([item[k] for item in items]) for k in items[0]},
                         ).train(resume_from_checkpoint=resume_from_checkpoint)
    return model


def test_hf_trainer_trains_checkpoints_and_resumes_projector_and_lora(tmp_path):
    untrained, _ = build()
    before = dict(untrained.named_parameters())
    model = train(tmp_path / "full", max_steps=3)
    assert model.lm.get_base_model().is_activation_checkpointing
    changed = {n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])}
    assert any("lora_B" in n for n in changed) and any(n.startswith("projector.") for n in changed)
    assert (tmp_path / "full" / "checkpoint-2" / "projector.safetensors").exists()

    resumed = train(tmp_path / "full", max_steps=3, resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    for (name, expected), actual in zip(model.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(actual, expected, msg=name)
