"""Ranking metrics and AUC against brute-force Python loops (random data, ties, history masking)."""

import math
import random

import pytest
import torch

from llmrec_ft.eval import (RankingAccumulator, candidate_metrics, flatten_report, full_ranking_metrics, roc_auc,
                            sample_negatives, sampled_ranking_metrics)

KS = (1, 5, 10)


def brute_metrics(score_row, target, candidates, ks=KS):
    """Sort the candidates by score (descending) and average the gains over every place the target can take
    inside its block of tied scores, i.e. the expectation under a uniformly random tie-break."""
    ordered = sorted(candidates, key=lambda item: -score_row[item])
    tied = [pos for pos, item in enumerate(ordered) if score_row[item] == score_row[target]]
    out = {}
    for k in ks:
        hits = [pos < k for pos in tied]
        out[f"hr@{k}"] = sum(hits) / len(tied)
        out[f"ndcg@{k}"] = sum(1 / math.log2(pos + 2) for pos in tied if pos < k) / len(tied)
        out[f"mrr@{k}"] = sum(1 / (pos + 1) for pos in tied if pos < k) / len(tied)
    return out


def random_case(seed, batch=12, num_items=30, integer_scores=False):
    gen = random.Random(seed)
    torch.manual_seed(seed)
    if integer_scores:  # few distinct values: many ties
        scores = torch.randint(0, 4, (batch, num_items + 1)).float()
    else:
        scores = torch.randn(batch, num_items + 1)
    targets = torch.tensor([gen.randint(1, num_items) for _ in range(batch)])
    history = []
    for row in range(batch):
        seen = gen.sample(range(1, num_items + 1), gen.randint(0, num_items // 2))
        if row % 3 == 0:
            seen.append(int(targets[row]))  # a repeat: the target is in the history and must stay ranked
        history.append(seen)
    return scores, targets, history


@pytest.mark.parametrize("integer_scores", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_ranking_matches_brute_force(seed, integer_scores):
    scores, targets, history = random_case(seed, integer_scores=integer_scores)
    got = full_ranking_metrics(scores, targets, history, KS)
    num_items = scores.shape[1] - 1
    for row in range(len(targets)):
        target = int(targets[row])
        candidates = [i for i in range(1, num_items + 1) if i not in history[row] or i == target]
        want = brute_metrics(scores[row].tolist(), target, candidates)
        for name, value in want.items():
            assert got[name][row].item() == pytest.approx(value, abs=1e-6), (name, row)


def test_padded_history_tensor_equals_lists():
    scores, targets, history = random_case(3)
    width = max(len(h) for h in history)
    padded = torch.tensor([h + [0] * (width - len(h)) for h in history])
    a = full_ranking_metrics(scores, targets, history, KS)
    b = full_ranking_metrics(scores, targets, padded, KS)
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_history_masking_changes_rank_and_padding_column_is_ignored():
    scores = torch.tensor([[100.0, 5.0, 4.0, 3.0, 2.0]])  # column 0 (padding) would beat everything
    target = torch.tensor([3])
    assert full_ranking_metrics(scores, target, [[]], ks=(1,))["mrr@1"].item() == 0.0
    assert full_ranking_metrics(scores, target, [[]], ks=(5,))["mrr@5"].item() == pytest.approx(1 / 3)
    masked = full_ranking_metrics(scores, target, [[1, 2]], ks=(1,))
    assert masked["hr@1"].item() == 1.0 and masked["ndcg@1"].item() == 1.0


def test_constant_scores_give_chance_level():
    num_items, k = 50, 10
    got = full_ranking_metrics(torch.zeros(4, num_items + 1), torch.tensor([1, 2, 3, 4]), [[], [5], [5, 6], []], (k,))
    expected = torch.tensor([k / 50, k / 49, k / 48, k / 50])
    torch.testing.assert_close(got[f"hr@{k}"], expected)


def test_bad_inputs_raise_clear_errors():
    scores = torch.randn(2, 6)
    with pytest.raises(ValueError, match="target 6 in row 1"):
        full_ranking_metrics(scores, torch.tensor([1, 6]), [[], []])
    with pytest.raises(ValueError, match="row 0"):
        full_ranking_metrics(scores, torch.tensor([0, 1]), [[], []])
    nan = scores.clone()
    nan[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        full_ranking_metrics(nan, torch.tensor([1, 1]), [[], []])
    with pytest.raises(ValueError, match="history has 1 rows"):
        full_ranking_metrics(scores, torch.tensor([1, 1]), [[2]])


def test_sample_negatives_are_unseen_unique_and_seeded():
    _, targets, history = random_case(4, batch=20, num_items=60)
    negatives = sample_negatives(targets, history, 60, 20, torch.Generator().manual_seed(7))
    assert negatives.shape == (20, 20)
    for row in range(20):
        row_negs = negatives[row].tolist()
        assert len(set(row_negs)) == 20
        assert all(1 <= n <= 60 and n not in history[row] and n != targets[row] for n in row_negs)
    again = sample_negatives(targets, history, 60, 20, torch.Generator().manual_seed(7))
    other = sample_negatives(targets, history, 60, 20, torch.Generator().manual_seed(8))
    assert torch.equal(negatives, again) and not torch.equal(negatives, other)
    with pytest.raises(ValueError, match="row 0: only"):
        sample_negatives(torch.tensor([1]), [list(range(2, 60))], 60, 5)


def test_sampled_metrics_match_brute_force_on_the_sampled_candidates():
    scores, targets, history = random_case(5, num_items=40, integer_scores=True)
    got = sampled_ranking_metrics(scores, targets, history, KS, num_negatives=9, generator=torch.Generator().manual_seed(1))
    negatives = sample_negatives(targets, history, 40, 9, torch.Generator().manual_seed(1))
    for row in range(len(targets)):
        candidates = [int(targets[row])] + negatives[row].tolist()
        want = brute_metrics(scores[row].tolist(), int(targets[row]), candidates)
        for name, value in want.items():
            assert got[name][row].item() == pytest.approx(value, abs=1e-6), (name, row)


def test_sampling_every_unseen_item_equals_full_ranking():
    scores = torch.randn(1, 21)
    target, history = torch.tensor([4]), [[1, 2, 3]]
    sampled = sampled_ranking_metrics(scores, target, history, (5,), num_negatives=16)  # 20 items - 3 seen - the target
    full = full_ranking_metrics(scores, target, history, (5,))
    torch.testing.assert_close(sampled["ndcg@5"], full["ndcg@5"])


def test_candidate_metrics_target_in_column_zero():
    got = candidate_metrics(torch.tensor([[0.5, 0.9, 0.1, 0.5]]), ks=(2, 3))
    assert got["hr@2"].item() == pytest.approx(0.5)  # rank 1 or 2 (tie) -> hit@2 half the time
    assert got["hr@3"].item() == 1.0


def test_accumulator_groups_are_means_of_their_users():
    acc = RankingAccumulator(ks=(10,))
    per_user = []
    cold_all = []
    for seed in range(3):
        scores, targets, history = random_case(seed, integer_scores=True)
        cold = torch.arange(len(targets)) % 4 == seed
        acc.add(scores, targets, history, cold=cold)
        per_user.append(full_ranking_metrics(scores, targets, history, (10,))["ndcg@10"])
        cold_all.append(cold)
    values, cold = torch.cat(per_user), torch.cat(cold_all)
    report = acc.compute()
    assert report["all"]["num_users"] == 36 and report["cold"]["num_users"] == int(cold.sum())
    assert report["all"]["ndcg@10"] == pytest.approx(values.mean().item(), abs=1e-6)
    assert report["cold"]["ndcg@10"] == pytest.approx(values[cold].mean().item(), abs=1e-6)
    assert report["warm"]["ndcg@10"] == pytest.approx(values[~cold].mean().item(), abs=1e-6)
    assert flatten_report(report)["cold/ndcg@10"] == report["cold"]["ndcg@10"]


def test_accumulator_without_cold_mask_and_empty_group():
    acc = RankingAccumulator(ks=(10,))
    scores, targets, history = random_case(0)
    acc.add(scores, targets, history)
    assert set(acc.compute()) == {"all"}
    acc = RankingAccumulator(ks=(10,))
    acc.add(scores, targets, history, cold=[False] * len(targets))
    assert acc.compute()["cold"] == {"num_users": 0}


def test_sampled_accumulator_is_reproducible():
    scores, targets, history = random_case(1, num_items=40)
    reports = []
    for _ in range(2):
        acc = RankingAccumulator(ks=(10,), num_negatives=20, seed=3)
        acc.add(scores[:6], targets[:6], history[:6])
        acc.add(scores[6:], targets[6:], history[6:])
        reports.append(acc.compute())
    assert reports[0] == reports[1]


def brute_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_pairwise_count_with_ties(seed):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 5, (200,), generator=gen).float()
    labels = torch.rand(200, generator=gen) < 0.3
    assert roc_auc(scores, labels) == pytest.approx(brute_auc(scores.tolist(), labels.tolist()), abs=1e-12)


def test_auc_edge_cases():
    labels = torch.tensor([0, 0, 1, 1])
    assert roc_auc(torch.tensor([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert roc_auc(torch.tensor([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    assert roc_auc(torch.zeros(4), labels) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(torch.randn(3), torch.ones(3))
    with pytest.raises(ValueError, match="0/1"):
        roc_auc(torch.randn(2), torch.tensor([0, 2]))
