"""CoLLM / SASRecLLM protocol pieces: UAUC (fast vs slow), BCE on the Yes logit, MF, the two-slot prompt."""

import datasets
import pytest
import torch
import torch.nn.functional as F

from llmrec_ft.collab.mf import MFTrainingConfig, fit_mf, predict
from llmrec_ft.eval import roc_auc, uauc, user_auc
from llmrec_ft.llm.prompts import load_prompt
from llmrec_ft.train.answer_losses import answer_logits, yes_bce_loss
from llmrec_ft.train.collator import PointwiseCollator
from llmrec_ft.train.scoring import yes_logit_gaps, yes_probabilities
from llmrec_ft.train.tiny import save_tiny_backbone, tiny_collaborative_lm


def slow_uauc(scores, labels, users):
    """CoLLM's uAUC_me, written plainly: per-user AUC (pairwise count, ties 1/2), users with one class skipped."""
    aucs = {}
    for user in sorted(set(users.tolist())):
        mask = users == user
        pos, neg = scores[mask & (labels == 1)], scores[mask & (labels == 0)]
        if len(pos) and len(neg):
            pairs = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
            aucs[user] = float(pairs.mean())
    return aucs


@pytest.mark.parametrize("seed", range(4))
def test_user_auc_matches_the_slow_reference(seed):
    g = torch.Generator().manual_seed(seed)
    n = 400
    scores = torch.randint(0, 6, (n,), generator=g).float() if seed % 2 else torch.rand(n, generator=g)  # ties
    labels = torch.randint(0, 2, (n,), generator=g)
    users = torch.randint(0, 50, (n,), generator=g) * 3 - 20  # unsorted, negative and sparse ids
    users[0] = 999  # one user with a single sample
    expected = slow_uauc(scores, labels, users)
    ids, aucs = user_auc(scores, labels, users)
    assert ids.tolist() == list(expected) and 999 not in ids.tolist()
    torch.testing.assert_close(aucs, torch.tensor(list(expected.values()), dtype=torch.float64))
    assert uauc(scores, labels, users) == pytest.approx(sum(expected.values()) / len(expected))
    one = users == ids[0]
    assert aucs[0].item() == pytest.approx(roc_auc(scores[one], labels[one]))


def test_uauc_errors():
    with pytest.raises(ValueError, match="both a positive and a negative"):
        uauc(torch.rand(4), torch.tensor([1, 1, 0, 0]), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="3 scores, 3 labels and 2 users"):
        uauc(torch.rand(3), torch.tensor([1, 0, 1]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="NaN"):
        uauc(torch.tensor([0.1, float("nan")]), torch.tensor([1, 0]), torch.tensor([0, 0]))


def test_yes_bce_is_bce_on_the_yes_logit_and_scales_like_the_ce_path():
    torch.manual_seed(0)
    yes, no = 7, 3
    logits = torch.randn(3, 5, 11)
    labels = torch.full((3, 5), -100)
    labels[0, 4], labels[1, 3], labels[2, 4] = yes, no, yes  # the answer sits after the prompt
    rows, targets = answer_logits(logits, labels)
    torch.testing.assert_close(rows, torch.stack([logits[0, 3], logits[1, 2], logits[2, 3]]))
    assert targets.tolist() == [yes, no, yes]
    expected = F.binary_cross_entropy_with_logits(rows[:, yes], torch.tensor([1.0, 0.0, 1.0]))
    torch.testing.assert_close(yes_bce_loss(logits, labels, yes), expected)
    torch.testing.assert_close(yes_bce_loss(rows, labels, yes), expected)  # answer-only rows give the same
    torch.testing.assert_close(yes_bce_loss(logits, labels, yes, num_items_in_batch=6), expected * 3 / 6)
    with pytest.raises(ValueError, match="2 logit rows for 3 labelled tokens"):
        yes_bce_loss(rows[:2], labels, yes)


@pytest.mark.parametrize("answer_only", [True, False])
def test_collaborative_lm_trains_with_yes_bce(tmp_path, answer_only):
    backbone = save_tiny_backbone(tmp_path / "llama", "llama", hidden_size=32, num_layers=1)
    model, tokenizer = tiny_collaborative_lm(backbone, num_items=30)
    model.eval()  # no dropout: the loss and the scores below see the same forward
    model.answer_only_loss, model.loss = answer_only, "yes_bce"
    yes = tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
    no = tokenizer("No", add_special_tokens=False)["input_ids"][0]
    model.yes_token_id = yes
    template = load_prompt("collm_yes_no", history_cf=False)
    rows = []
    for history, candidate, answer in (([1, 2, 3], 4, yes), ([5], 6, no)):
        prompt = template.render(tokenizer, [f"Movie {i}" for i in history], [True] * len(history), f"Movie {candidate}")
        ids = tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
        rows.append({"input_ids": [*ids, answer], "labels": [-100] * len(ids) + [answer], "cf_history": history,
                     "cf_items": prompt.cf_item_ids(history, candidate)})
    assert [r["cf_items"] for r in rows] == [[4], [6]]  # two slots: the user and the candidate only
    batch = PointwiseCollator(tokenizer.pad_token_id)(rows)
    loss = model(**batch).loss
    scoring = PointwiseCollator(tokenizer.pad_token_id, padding_side="left", prompt_only=True)(rows)
    with torch.no_grad():
        yes_logit = model(**scoring).logits[:, -1, yes]
    torch.testing.assert_close(loss.detach(), F.binary_cross_entropy_with_logits(yes_logit, torch.tensor([1.0, 0.0])),
                               atol=1e-5, rtol=1e-4)
    encoded = datasets.Dataset.from_list(rows)
    scores = yes_logit_gaps(model, encoded, tokenizer.pad_token_id, yes, None, True, batch_size=2)
    torch.testing.assert_close(scores, yes_logit, atol=1e-5, rtol=1e-4)  # CoLLM's score, before the sigmoid
    torch.testing.assert_close(yes_probabilities(model, encoded, tokenizer.pad_token_id, yes, None, True),
                               torch.sigmoid(scores), atol=1e-5, rtol=1e-4)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projector.parameters())


def test_trainable_lm_rejects_unknown_loss(tmp_path):
    from llmrec_ft.train.trainer import TrainableCollaborativeLM

    backbone = save_tiny_backbone(tmp_path / "llama", "llama", hidden_size=32, num_layers=1)
    model, _ = tiny_collaborative_lm(backbone, num_items=5)
    with pytest.raises(ValueError, match="loss='hinge'"):
        TrainableCollaborativeLM(model.lm, model.projector, model.collab_model, model.token_ids, loss="hinge")
    with pytest.raises(ValueError, match="needs yes_token_id"):
        TrainableCollaborativeLM(model.lm, model.projector, model.collab_model, model.token_ids, loss="yes_bce")


def test_mf_learns_a_planted_preference():
    g = torch.Generator().manual_seed(0)
    users, items = torch.randint(0, 40, (4000,), generator=g), torch.randint(0, 30, (4000,), generator=g)
    labels = ((users % 2) == (items % 2)).long()  # users like items of their parity
    split = 3000
    model, info = fit_mf((users[:split], items[:split], labels[:split]), (users[split:], items[split:], labels[split:]),
                         40, 30, MFTrainingConfig(dim=8, lr=0.05, max_epochs=40, patience=5))
    assert roc_auc(predict(model, users[split:], items[split:]), labels[split:]) > 0.95
    assert info["best_valid_auc"] > 0.95 and info["epochs"] <= 40
