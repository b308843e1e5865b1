import datasets
import pytest
import torch

from llmrec_ft.adapters import attach_adapter, build_adapter
from llmrec_ft.collab.bert4rec import BERT4Rec, BERT4RecConfig, MaskedItemCollator, masked_item_windows
from llmrec_ft.collab.gru4rec import GRU4Rec, GRU4RecConfig

NUM_ITEMS = 20


def gru4rec(**overrides):
    torch.manual_seed(0)
    config = dict(num_items=NUM_ITEMS, hidden_size=16, gru_hidden_size=24, max_len=8)
    return GRU4Rec(GRU4RecConfig(**{**config, **overrides})).eval()


def bert4rec(**overrides):
    torch.manual_seed(0)
    config = dict(num_items=NUM_ITEMS, hidden_size=16, num_heads=2, intermediate_size=32, max_len=8)
    return BERT4Rec(BERT4RecConfig(**{**config, **overrides})).eval()


BACKBONES = {"gru4rec": gru4rec, "bert4rec": bert4rec}
SEQUENCES = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_extra_left_padding_changes_nothing(name):
    model = BACKBONES[name]()
    padded = torch.cat([torch.zeros(2, 2, dtype=torch.long), SEQUENCES], 1)
    torch.testing.assert_close(model.encode(padded)[:, 2:], model.encode(SEQUENCES), atol=1e-5, rtol=1e-5)
    assert model.encode(padded)[:, :2].abs().max() == 0
    torch.testing.assert_close(model.score_all_items(padded), model.score_all_items(SEQUENCES), atol=1e-5, rtol=1e-5)


def test_gru4rec_is_causal_and_matches_an_unpacked_gru_on_a_full_row():
    model = gru4rec()
    changed = SEQUENCES.clone()
    changed[1, 4] = 9
    before, after = model.encode(SEQUENCES), model.encode(changed)
    torch.testing.assert_close(after[1, :4], before[1, :4])
    assert not torch.allclose(after[1, 4:], before[1, 4:])
    out, _ = model.gru(model.item_embeddings(SEQUENCES[1:]))
    torch.testing.assert_close(model.output_proj(out), before[1:], atol=1e-5, rtol=1e-5)


def test_bert4rec_is_bidirectional_and_scores_at_an_appended_mask():
    model = bert4rec()
    changed = SEQUENCES.clone()
    changed[1, 5] = 9
    assert not torch.allclose(model.encode(changed)[1, :5], model.encode(SEQUENCES)[1, :5])
    full = torch.arange(1, 9).repeat(2, 1)  # a full window: the oldest item makes room for [MASK]
    appended = model.with_mask_appended(full)
    assert appended.shape == (2, 8) and torch.equal(appended[:, :-1], full[:, 1:])
    assert torch.all(appended[:, -1] == NUM_ITEMS + 1)
    scores = model.score_all_items(full)
    assert scores.shape == (2, NUM_ITEMS + 1) and torch.all(scores[:, 0] == float("-inf"))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_right_padding_and_overlong_inputs_are_rejected(name):
    model = BACKBONES[name]()
    with pytest.raises(ValueError, match="right-padded"):
        model.score_all_items(torch.tensor([[3, 4, 0]]))
    with pytest.raises(ValueError, match="max_len 8"):
        model.encode(torch.ones(1, 9, dtype=torch.long))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_save_load_round_trip(name, tmp_path):
    model = BACKBONES[name]()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = type(model).from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded.score_all_items(SEQUENCES), model.score_all_items(SEQUENCES))


def cyclic_batch(name, model):
    """Every user walks the catalogue in order: item i is always followed by i + 1."""
    starts = torch.arange(16) % NUM_ITEMS
    rows = ((starts[:, None] + torch.arange(8)) % NUM_ITEMS) + 1
    if name == "gru4rec":
        return {"input_ids": rows[:, :-1], "labels": rows[:, 1:]}
    return MaskedItemCollator(model.config.mask_token_id, 0.3)([{"input_ids": row.tolist()} for row in rows])


# Cloze training sees fewer labels per step (only masked positions), so BERT4Rec gets more, smaller steps.
TRAINING = {"gru4rec": ({}, 60, 1e-2, 0.3), "bert4rec": ({"hidden_size": 32, "intermediate_size": 64}, 150, 3e-3, 0.6)}


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("fused", [False, True])
def test_training_learns_a_deterministic_pattern(name, fused):
    overrides, steps, lr, ratio = TRAINING[name]
    model = BACKBONES[name](dropout=0.0, **overrides).train()
    if fused:  # the adapter contract: text goes in through item_embeddings for inputs and scoring alike
        text = torch.randn(NUM_ITEMS, 12, generator=torch.Generator().manual_seed(1))
        adapter = build_adapter("spectran", text, model.config.hidden_size, model_dim=16, num_heads=2, dropout=0.0)
        attach_adapter(model, adapter)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        torch.manual_seed(step)
        loss = model(**cyclic_batch(name, model)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < ratio * sum(losses[:5]) / 5
    if fused:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.item_embeddings.adapter.parameters())
    history = torch.arange(3, 10)[None]  # as long as the training windows (BERT4Rec then appends [MASK])
    assert model.eval().score_all_items(history).argmax(1).item() == 10


def test_masked_item_collator_masks_only_items_and_labels_them():
    torch.manual_seed(0)
    collator = MaskedItemCollator(mask_token_id=NUM_ITEMS + 1, mask_prob=0.5)
    batch = collator([{"input_ids": [1, 2, 3, 4, 5, 6]}, {"input_ids": [7, 8]}])
    inputs, labels = batch["input_ids"], batch["labels"]
    assert inputs.shape == labels.shape == (2, 6)
    masked = inputs.eq(NUM_ITEMS + 1)
    assert torch.equal(masked, labels.ne(0)) and masked.any(1).all()
    assert torch.all(inputs[1, :4] == 0) and torch.all(labels[1, :4] == 0)  # padding is never masked
    original = torch.tensor([[1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 7, 8]])
    torch.testing.assert_close(torch.where(masked, labels, inputs), original)


def test_collator_masks_the_last_item_when_none_was_drawn():
    batch = MaskedItemCollator(mask_token_id=NUM_ITEMS + 1, mask_prob=1e-9)([{"input_ids": [4, 5, 6]}])
    assert batch["input_ids"].tolist() == [[4, 5, NUM_ITEMS + 1]] and batch["labels"].tolist() == [[0, 0, 6]]


def test_masked_item_windows_cover_every_item():
    train = datasets.Dataset.from_dict({"items": [list(range(1, 12)), [3, 4]]})
    windows = masked_item_windows(train, max_len=4)["input_ids"]
    assert all(len(w) <= 4 for w in windows)
    assert set(sum(windows[:-1], [])) == set(range(1, 12)) and windows[-1] == [3, 4]
    with pytest.raises(ValueError, match="row 0"):
        masked_item_windows(datasets.Dataset.from_dict({"items": [[1, 0, 2]]}), max_len=4)


def test_adapter_must_cover_the_whole_catalogue():
    text = torch.randn(NUM_ITEMS - 1, 12)
    with pytest.raises(ValueError, match="20 items but the text embeddings have 19"):
        attach_adapter(gru4rec(), build_adapter("linear", text, 16))


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="mask_prob"):
        BERT4RecConfig(num_items=5, mask_prob=1.5)
    with pytest.raises(ValueError, match="divisible"):
        BERT4RecConfig(num_items=5, hidden_size=10, num_heads=3)
    with pytest.raises(ValueError, match="num_layers"):
        GRU4RecConfig(num_items=5, num_layers=0)
