import datasets
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from llmrec_ft.filters.frellm4rec import FreLLM4Rec, FreLLM4RecConfig
from llmrec_ft.filters.frellm4rec_authors import (FreLLM4RecAuthors, SequenceCollator, build_frellm4rec,
                                                  frellm4rec_training_data, rank_full_and_sampled, sequence_examples,
                                                  uniform_negatives)
from llmrec_ft.filters.graph import cooccurrence_graph
from llmrec_ft.filters.tfm import butterworth_operator, causal_butterworth_operator, temporal_operators

NUM_ITEMS = 12
SEQUENCES = [[(start + t) % NUM_ITEMS + 1 for t in range(8)] for start in range(NUM_ITEMS)]


def tiny_lm():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=50,
                                        max_position_embeddings=64))


def build(**overrides):
    torch.manual_seed(1)
    config = FreLLM4RecConfig(**{"protocol": "authors", "max_len": 6, "fusion_size": 48, "tfm_cutoff": 0.3,
                                 "num_negatives": 5, **overrides})
    return FreLLM4RecAuthors(tiny_lm(), torch.randn(NUM_ITEMS + 1, 8), torch.randn(NUM_ITEMS + 1, 32), config,
                             cooccurrence_graph(SEQUENCES, NUM_ITEMS))


def test_causal_operator_is_lower_triangular_and_agrees_at_the_last_position():
    causal, full = causal_butterworth_operator(7, 0.3, 2), butterworth_operator(7, 0.3, 2)
    assert torch.equal(causal, causal.tril()) and not torch.equal(full, full.tril())
    torch.testing.assert_close(causal[-1], full[-1])
    for t in range(7):  # row t is the filter of the prefix 0..t, read at its end
        torch.testing.assert_close(causal[t, : t + 1], butterworth_operator(t + 1, 0.3, 2)[-1])
    padded = temporal_operators(torch.tensor([[0, 0, 1, 1, 1]]), 0.3, 2, causal=True)[0]
    torch.testing.assert_close(padded[2:, 2:], causal_butterworth_operator(3, 0.3, 2))
    assert torch.equal(padded[:2, :2], torch.eye(2, dtype=torch.float64))


@pytest.mark.parametrize("leak", [True, False])
def test_tfm_leak_switch(leak):
    """With the leak, position t's state (which predicts item t + 1) changes when item t + 1 changes."""
    model = build(tfm_leak=leak).eval()
    sequence, changed = torch.tensor([[1, 2, 3, 4, 5]]), torch.tensor([[1, 2, 3, 9, 5]])  # item at position 3
    with torch.no_grad():
        before, after = model.sequence_states(sequence), model.sequence_states(changed)
    earlier_changed = not torch.allclose(before[:, :3], after[:, :3], atol=1e-6, rtol=0)
    assert earlier_changed == leak
    assert not torch.allclose(before[:, 3:], after[:, 3:])  # position 3 onward sees it either way


def test_without_tfm_there_is_no_leak_even_with_the_switch_on():
    model = build(tfm=False, tfm_leak=True).eval()
    with torch.no_grad():
        before = model.sequence_states(torch.tensor([[1, 2, 3, 4, 5]]))
        after = model.sequence_states(torch.tensor([[1, 2, 3, 9, 5]]))
    torch.testing.assert_close(before[:, :3], after[:, :3])


@pytest.mark.parametrize("leak", [True, False])
def test_per_position_loss_against_prefix_reference(leak):
    """Without the leak, the per-position loss is exactly the last-position loss of every prefix (slow
    reference); with it, the positions see their targets and the two differ."""
    model = build(tfm_leak=leak).eval()
    sequences = torch.tensor([[0, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6]])
    negatives = torch.tensor([[1, 2, 8, 9, 10], [7, 8, 9, 10, 11]])
    with torch.no_grad():
        loss = model(sequences, negatives)["loss"]
        reference = []
        for row in range(2):
            for t in range(5):
                prefix, target = sequences[row, : t + 1], sequences[row, t + 1]
                if prefix[-1] == 0:
                    continue
                prefix = prefix[prefix.ne(0)][None]
                scores = model.score_all_items(prefix)[0]
                logits = torch.cat([scores[target][None], scores[negatives[row]]])
                reference.append(F.cross_entropy(logits[None], torch.tensor([0])))
        reference = torch.stack(reference).mean()
    assert torch.isclose(loss, reference, atol=1e-5) != leak


def test_gated_fusion_glpf_after_projection_and_gradients():
    model = build().train()
    assert model.tfm_dropout.training and not model.backbone.training
    loss = model(torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]), torch.tensor([[8, 9], [10, 11]]))["loss"]
    loss.backward()
    trained = {name.split(".")[0] for name, p in model.named_parameters() if p.grad is not None}
    assert trained == {"fusion", "final_norm"}
    assert all(not p.requires_grad for p in model.backbone.parameters())
    with torch.no_grad():
        plain, filtered = build(glpf=False).item_embeddings(), build(glpf=True).item_embeddings()
    assert plain.shape == (NUM_ITEMS + 1, 32) and not torch.allclose(plain, filtered)
    with pytest.raises(ValueError, match="graph"):
        FreLLM4RecAuthors(tiny_lm(), torch.randn(NUM_ITEMS + 1, 8), torch.randn(NUM_ITEMS + 1, 32),
                          FreLLM4RecConfig(protocol="authors"))


def test_dropout_only_in_training():
    model = build(tfm_dropout=0.5)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        model.eval()
        assert torch.equal(model.sequence_states(ids), model.sequence_states(ids))
        model.train()
        assert not torch.equal(model.sequence_states(ids), model.sequence_states(ids))


def test_examples_negatives_and_collator():
    examples = sequence_examples(datasets.Dataset.from_dict({"items": [[5, 6, 7, 8], [1, 2]]}), max_len=3)
    assert examples["input_ids"] == [[5, 6], [5, 6, 7], [6, 7, 8], [1, 2]]
    negatives = uniform_negatives(torch.tensor([3, 4]), num_items=5, num_negatives=4)
    assert sorted(negatives[0].tolist()) == [1, 2, 4, 5] and sorted(negatives[1].tolist()) == [1, 2, 3, 5]
    batch = SequenceCollator(num_items=NUM_ITEMS, num_negatives=5)([examples[0], examples[2]])
    assert batch["input_ids"].tolist() == [[0, 5, 6], [6, 7, 8]] and batch["negatives"].shape == (2, 5)
    assert not (batch["negatives"] == batch["input_ids"][:, -1:]).any()
    with pytest.raises(ValueError, match="row 1"):
        sequence_examples(datasets.Dataset.from_dict({"items": [[0, 3]]}), max_len=3)
    with pytest.raises(ValueError, match="negatives"):
        uniform_negatives(torch.tensor([1]), num_items=3, num_negatives=3)
    with pytest.raises(ValueError, match="protocol"):
        FreLLM4RecConfig(protocol="paper")


def test_build_dispatches_on_protocol():
    graph = cooccurrence_graph(SEQUENCES, NUM_ITEMS)
    ids, text = torch.randn(NUM_ITEMS + 1, 8), torch.randn(NUM_ITEMS + 1, 32)
    assert type(build_frellm4rec(tiny_lm(), ids, text, FreLLM4RecConfig(), graph)) is FreLLM4Rec
    authors = build_frellm4rec(tiny_lm(), ids, text, FreLLM4RecConfig(protocol="authors"), graph)
    assert type(authors) is FreLLM4RecAuthors


def test_rank_full_and_sampled_uses_both_protocols():
    model = build()
    # item 1 appears in every history: the full protocol masks it, the sampled one can draw it as a negative.
    examples = datasets.Dataset.from_dict({"history": [[1, 2, 3], [1, 5]] * 4, "target": [4, 6] * 4})
    report = rank_full_and_sampled(model, examples, num_negatives=5, ks=(1, 10), batch_size=3)
    assert report["full"]["all"]["num_users"] == report["sampled"]["all"]["num_users"] == 8
    assert report["sampled"]["all"]["hr@10"] == 1.0  # 6 candidates: always in the top 10
    assert report["full"]["all"]["hr@10"] < 1.0 or report["full"]["all"]["hr@1"] != report["sampled"]["all"]["hr@1"]


def test_trainer_learns_the_pattern_without_the_leak(tmp_path):
    # A mild causal filter: at cutoff 0.3 every prefix is smoothed towards its mean and 40 steps are not enough.
    model = build(tfm_leak=False, tfm_dropout=0.0, tfm_cutoff=0.9)
    config = model.config
    dataset, collator = frellm4rec_training_data(datasets.Dataset.from_dict({"items": SEQUENCES}), config, NUM_ITEMS)
    examples = datasets.Dataset.from_dict({"history": [s[:5] for s in SEQUENCES],
                                           "target": [s[5] for s in SEQUENCES]})
    before = rank_full_and_sampled(model, examples, num_negatives=5, ks=(1,))["full"]["all"]["hr@1"]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=40, per_device_train_batch_size=16,
                             learning_rate=3e-3, save_strategy="no", report_to=[], logging_strategy="no",
                             use_cpu=True, seed=0, disable_tqdm=True, remove_unused_columns=False)
    Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator).train()
    after = rank_full_and_sampled(model, examples, num_negatives=5, ks=(1,))["full"]["all"]["hr@1"]
    assert after >= 0.9 > before
