"""SASRec model, training windows and the Trainer glue, on tiny random configs and synthetic data."""

import datasets
import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from llmrec_ft.collab import SASRec, SASRecConfig
from llmrec_ft.collab.sequences import NextItemCollator, left_pad, ranking_batches, split_into_windows, training_windows
from llmrec_ft.collab.trainer import RankingTrainingArguments, evaluate_ranking, rank_examples, train_id_model

NUM_ITEMS = 30


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is much faster than several fighting over a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny(loss_type="ce", **kwargs) -> SASRec:
    torch.manual_seed(0)
    config = SASRecConfig(num_items=NUM_ITEMS, hidden_size=16, num_blocks=2, num_heads=2, intermediate_size=32,
                          max_len=12, dropout=0.1, loss_type=loss_type, **kwargs)
    return SASRec(config).eval()


def test_causal_later_items_do_not_change_earlier_outputs():
    model = tiny()
    ids = torch.randint(1, NUM_ITEMS + 1, (3, 10))
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] % NUM_ITEMS) + 1
    with torch.no_grad():
        before, after = model(ids).hidden_states, model(changed).hidden_states
    torch.testing.assert_close(before[:, :6], after[:, :6])
    assert not torch.allclose(before[:, 6:], after[:, 6:])


def test_left_padding_does_not_change_outputs_and_pad_rows_are_finite():
    model = tiny()
    ids = torch.tensor([[4, 9, 2, 7]])
    padded = torch.tensor([[0, 0, 0, 4, 9, 2, 7], [0, 0, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        short, long = model(ids).hidden_states, model(padded).hidden_states
        torch.testing.assert_close(long[0, 3:], short[0], atol=1e-5, rtol=1e-5)
        assert torch.all(long[0, :3] == 0) and torch.isfinite(long).all()
        torch.testing.assert_close(model.score_all_items(padded[:1]), model.score_all_items(ids), atol=1e-5, rtol=1e-5)


def test_scores_shape_padding_column_and_user_embedding():
    model = tiny()
    ids = left_pad([[1, 2, 3], [5, 6]])
    with torch.no_grad():
        scores = model.score_all_items(ids)
        user = model.sequence_representation(ids)
        items = model.all_item_embeddings()
    assert scores.shape == (2, NUM_ITEMS + 1) and user.shape == (2, 16)
    assert torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    torch.testing.assert_close(scores[:, 1:], user @ items[1:].T)


def test_bad_inputs_raise():
    model = tiny()
    with pytest.raises(ValueError, match="right-padded"):
        model.sequence_representation(torch.tensor([[3, 4, 0]]))
    with pytest.raises(ValueError, match="exceeds max_len 12"):
        model(torch.ones(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="loss_type"):
        SASRecConfig(num_items=5, loss_type="bpr")
    with pytest.raises(ValueError, match="divisible"):
        SASRecConfig(num_items=5, hidden_size=10, num_heads=3)


def test_every_item_lookup_goes_through_item_embeddings():
    """A swapped-in item module (what SpecTran's text fusion does) must drive inputs, loss and scoring."""
    model = tiny()

    class Shifted(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, ids):
            self.calls += 1
            return self.inner(ids) + 1.0

    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        before = model.score_all_items(ids)
        model.item_embeddings = Shifted(model.item_embeddings)
        after = model.score_all_items(ids)
        model(ids, labels=torch.tensor([[2, 3, 4]]))
    assert model.item_embeddings.calls == 4  # inputs + catalog for scoring, inputs + catalog for the loss
    assert not torch.allclose(before[:, 1:], after[:, 1:])


def test_save_load_round_trip(tmp_path):
    model = tiny(loss_type="bce", num_negatives=3)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "config.json").exists()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "llmrec_sasrec"
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, SASRec) and loaded.config.num_negatives == 3 and loaded.config.loss_type == "bce"
    ids = left_pad([[1, 2, 3], [7]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.score_all_items(ids), model.score_all_items(ids))


@pytest.mark.parametrize("loss_type", ["ce", "bce"])
def test_learns_a_deterministic_next_item_pattern(loss_type):
    """Item i is always followed by i + 1 (cyclically): the loss must fall and the top-1 prediction be right."""
    torch.manual_seed(0)
    model = tiny(loss_type, num_negatives=4).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(120):
        starts = torch.randint(0, NUM_ITEMS, (32, 1))
        window = (starts + torch.arange(9)) % NUM_ITEMS + 1
        loss = model(window[:, :-1], labels=window[:, 1:]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    model.eval()
    history = left_pad([[5, 6, 7], [28, 29, 30]])
    with torch.no_grad():
        assert model.score_all_items(history).argmax(1).tolist() == [8, 1]


def test_windows_cover_every_transition_once():
    items = list(range(1, 24))
    for max_len in (1, 4, 5, 22, 30):
        windows = split_into_windows(items, max_len)
        assert all(2 <= len(w) <= max_len + 1 for w in windows)
        assert windows[0][-1] == items[-1]  # the newest window ends with the newest item
        transitions = sorted((a, b) for w in windows for a, b in zip(w, w[1:]))
        assert transitions == list(zip(items, items[1:]))
    assert split_into_windows([3], 5) == []


def test_training_windows_and_collator():
    train = datasets.Dataset.from_dict({"items": [[1, 2, 3, 4, 5, 6], [7, 8]]})
    windows = training_windows(train, max_len=3)
    assert windows["input_ids"] == [[3, 4, 5], [1, 2], [7]] and windows["labels"] == [[4, 5, 6], [2, 3], [8]]
    batch = NextItemCollator()([windows[0], windows[2]])
    assert batch["input_ids"].tolist() == [[3, 4, 5], [0, 0, 7]] and batch["labels"].tolist() == [[4, 5, 6], [0, 0, 8]]
    with pytest.raises(ValueError, match="row 1"):
        training_windows(datasets.Dataset.from_dict({"items": [[1, 2], [0, 3]]}), 3)


def test_ranking_batches_truncate_input_but_mask_full_history():
    split = datasets.Dataset.from_dict({"history": [[1, 2, 3, 4, 5], [6]], "target": [7, 8],
                                        "target_is_cold": [False, True]})
    batch = next(ranking_batches(split, max_len=3, batch_size=8))
    assert batch["input_ids"].tolist() == [[3, 4, 5], [0, 0, 6]]
    assert batch["history"].tolist() == [[1, 2, 3, 4, 5], [0, 0, 0, 0, 6]]
    assert batch["targets"].tolist() == [7, 8] and batch["cold"].tolist() == [False, True]


def synthetic_splits(num_users=40, length=14, seed=0) -> datasets.DatasetDict:
    """Users walk the catalog cyclically from a random start: learnable, so validation NDCG must rise."""
    gen = torch.Generator().manual_seed(seed)
    train, valid, test = [], [], []
    for user in range(num_users):
        start = int(torch.randint(0, NUM_ITEMS, (1,), generator=gen))
        seq = [(start + t) % NUM_ITEMS + 1 for t in range(length)]
        train.append({"user_id": user, "items": seq[:-2]})
        valid.append({"user_id": user, "history": seq[:-2], "target": seq[-2], "target_is_cold": user % 5 == 0})
        test.append({"user_id": user, "history": seq[:-1], "target": seq[-1], "target_is_cold": user % 5 == 0})
    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows)
                                 for name, rows in (("train", train), ("valid", valid), ("test", test))})


def test_train_id_model_evaluates_each_epoch_and_keeps_the_best(tmp_path):
    ds = synthetic_splits()
    model = tiny().train()
    before = evaluate_ranking(model, ds, "test", ks=(10,))["all"]["ndcg@10"]
    args = RankingTrainingArguments(output_dir=str(tmp_path), num_train_epochs=4, learning_rate=1e-2,
                                    per_device_train_batch_size=16, use_cpu=True, disable_tqdm=True, seed=0,
                                    early_stopping_patience=2, eval_ks=[10])
    trainer = train_id_model(model, ds, args)
    evals = [entry for entry in trainer.state.log_history if "eval_ndcg@10" in entry]
    assert len(evals) == 4 and "eval_cold/ndcg@10" in evals[0]
    assert trainer.state.best_metric == max(entry["eval_ndcg@10"] for entry in evals)
    report = rank_examples(trainer.model, ds["valid"], ks=(10,))
    assert report["all"]["ndcg@10"] == pytest.approx(trainer.state.best_metric)  # the best weights were reloaded
    assert set(report) == {"all", "warm", "cold"} and report["cold"]["num_users"] == 8
    assert evaluate_ranking(trainer.model, ds, "test", ks=(10,))["all"]["ndcg@10"] > before + 0.3


def test_sampled_evaluation_option():
    ds = synthetic_splits(num_users=10)
    report = evaluate_ranking(tiny(), ds, "valid", ks=(5,), num_negatives=9, seed=1)
    assert report == evaluate_ranking(tiny(), ds, "valid", ks=(5,), num_negatives=9, seed=1)
    assert 0.0 <= report["all"]["hr@5"] <= 1.0


def test_load_or_train_sasrec_trains_once_then_reuses_and_checks_checkpoints(tmp_path, monkeypatch):
    from llmrec_ft.collab import trainer

    ds = synthetic_splits(num_users=10)
    ds["items"] = datasets.Dataset.from_dict({"item_id": list(range(1, NUM_ITEMS + 1))})
    sasrec, path = trainer.load_or_train_sasrec(ds, None, tmp_path, seed=0, epochs=1)
    assert path == tmp_path / "sasrec" and (path / "config.json").exists() and not sasrec.training
    monkeypatch.setattr(trainer, "train_id_model", lambda *a, **k: pytest.fail("an existing SASRec is retrained"))
    again, _ = trainer.load_or_train_sasrec(ds, None, tmp_path, seed=0, epochs=1)
    assert torch.equal(again.item_embeddings.weight, sasrec.item_embeddings.weight)
    with pytest.raises(FileNotFoundError, match="sasrec_checkpoint=.*nowhere: no config.json there"):
        trainer.load_or_train_sasrec(ds, tmp_path / "nowhere", tmp_path, seed=0)
    SASRec(SASRecConfig(num_items=NUM_ITEMS + 5, hidden_size=8)).save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="SASRec has 35 items, the data has 30"):
        trainer.load_or_train_sasrec(ds, tmp_path / "other", tmp_path, seed=0)
