import datasets
import pytest
import torch
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Trainer, TrainingArguments)

from llmrec_ft.filters.frellm4rec import FreLLM4Rec, FreLLM4RecConfig, collate_histories, next_item_examples
from llmrec_ft.filters.graph import cooccurrence_graph

ARCHS = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
         "mistral": (MistralConfig, MistralForCausalLM)}
NUM_ITEMS = 12
# Item i is always followed by item i + 1 (cyclically): a pattern the fusion MLP can learn quickly.
SEQUENCES = [[(start + t) % NUM_ITEMS + 1 for t in range(8)] for start in range(NUM_ITEMS)]


def tiny_lm(arch="llama"):
    config_cls, model_cls = ARCHS[arch]
    torch.manual_seed(0)
    config = config_cls(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=50, max_position_embeddings=64)
    return model_cls(config)


def build(arch="llama", **overrides):
    torch.manual_seed(1)
    config = FreLLM4RecConfig(max_len=6, fusion_size=48, tfm_cutoff=0.3, **overrides)
    id_embeddings, text_embeddings = torch.randn(NUM_ITEMS + 1, 8), torch.randn(NUM_ITEMS + 1, 32)
    return FreLLM4Rec(tiny_lm(arch), id_embeddings, text_embeddings, config, cooccurrence_graph(SEQUENCES, NUM_ITEMS))


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_only_fusion_and_projection_get_gradients(arch):
    model = build(arch).train()
    out = model(torch.tensor([[0, 0, 1, 2, 3], [4, 5, 6, 7, 8]]), labels=torch.tensor([4, 9]))
    out["loss"].backward()
    assert out["logits"].shape == (2, NUM_ITEMS + 1) and torch.isinf(out["logits"][:, 0]).all()
    trained = {name.split(".")[0] for name, p in model.named_parameters() if p.grad is not None}
    assert trained == {"fusion", "output_projection"}
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())
    assert not model.backbone.training  # Trainer's model.train() must not switch on the LM's dropout


def test_extra_left_padding_does_not_change_scores():
    model = build().eval()
    with torch.no_grad():
        short = model.score_all_items(torch.tensor([[3, 4, 5]]))
        padded = model.score_all_items(torch.tensor([[0, 0, 0, 3, 4, 5]]))
    torch.testing.assert_close(short[:, 1:], padded[:, 1:], atol=1e-5, rtol=1e-5)


def test_each_filter_changes_the_model_and_glpf_needs_the_graph():
    history = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        scores = {(glpf, tfm): build(glpf=glpf, tfm=tfm).eval().score_all_items(history)
                  for glpf in (False, True) for tfm in (False, True)}
    values = list(scores.values())
    assert all(not torch.allclose(a, b) for i, a in enumerate(values) for b in values[i + 1:])
    assert not torch.equal(build(glpf=True).item_features, build(glpf=False).item_features)
    with pytest.raises(ValueError, match="graph"):
        FreLLM4Rec(tiny_lm(), torch.randn(NUM_ITEMS + 1, 8), torch.randn(NUM_ITEMS + 1, 32), FreLLM4RecConfig())


def test_bad_histories_are_named():
    model = build()
    with pytest.raises(ValueError, match="left-padded"):
        model.score_all_items(torch.tensor([[1, 2, 0]]))
    with pytest.raises(ValueError, match="max_len"):
        model.score_all_items(torch.arange(1, 9)[None])


def test_layer_states_with_and_without_tfm():
    model = build()
    ids = torch.tensor([[0, 1, 2, 3, 4, 5]])
    plain, filtered = model.layer_states(ids, tfm=False), model.layer_states(ids, tfm=True)
    assert len(plain) == 3 and all(state.shape == (1, 6, 32) for state in plain)
    assert torch.equal(plain[0], filtered[0]) and not torch.allclose(plain[2], filtered[2])


def test_examples_and_collator():
    train = datasets.Dataset.from_dict({"items": [[5, 6, 7, 8], [1, 2]]})
    examples = next_item_examples(train, max_len=2)
    assert examples["input_ids"] == [[5], [5, 6], [6, 7], [1]] and examples["labels"] == [6, 7, 8, 2]
    batch = collate_histories([examples[0], examples[2]])
    assert batch["input_ids"].tolist() == [[0, 5], [6, 7]] and batch["labels"].tolist() == [6, 8]
    with pytest.raises(ValueError, match="row 0"):
        next_item_examples(datasets.Dataset.from_dict({"items": [[0, 3]]}), max_len=2)


def test_trainer_learns_the_next_item_pattern(tmp_path):
    model = build()
    examples = next_item_examples(datasets.Dataset.from_dict({"items": SEQUENCES}), max_len=6)
    batch = collate_histories([examples[i] for i in range(len(examples))])

    def loss():
        with torch.no_grad():
            return model.eval()(**batch)["loss"].item()

    before = loss()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=40, per_device_train_batch_size=16,
                             learning_rate=3e-3, save_strategy="no", report_to=[], logging_strategy="no",
                             use_cpu=True, seed=0, disable_tqdm=True)
    Trainer(model=model, args=args, train_dataset=examples, data_collator=collate_histories).train()
    assert loss() < 0.5 * before
