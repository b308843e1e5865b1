"""DeLong standard errors (llmrec_ft/eval/auc.py): the rank-based fast path equals the textbook definition."""

import pytest
import torch

from llmrec_ft.eval.auc import auc_difference, auc_standard_error, delong_covariance, roc_auc


def brute_delong(score_rows, labels):
    """DeLong et al. 1988 written out: psi(x, y) = 1 if x > y, 1/2 if equal; per-sample components; covariance."""
    pos = [i for i, label in enumerate(labels) if label]
    neg = [i for i, label in enumerate(labels) if not label]
    psi = lambda x, y: 1.0 if x > y else 0.5 if x == y else 0.0  # noqa: E731
    v10 = [[sum(psi(s[i], s[j]) for j in neg) / len(neg) for i in pos] for s in score_rows]
    v01 = [[sum(psi(s[i], s[j]) for i in pos) / len(pos) for j in neg] for s in score_rows]
    def cov(a, b):
        return sum((x - sum(a) / len(a)) * (y - sum(b) / len(b)) for x, y in zip(a, b)) / (len(a) - 1)
    k = len(score_rows)
    matrix = [[cov(v10[r], v10[c]) / len(pos) + cov(v01[r], v01[c]) / len(neg) for c in range(k)] for r in range(k)]
    return [sum(row) / len(row) for row in v10], matrix


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_delong_equals_the_definition_with_ties(seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.rand(41, generator=generator) < 0.4
    labels[:2], labels[2:4] = True, False
    scores = torch.randint(0, 6, (3, 41), generator=generator).double()  # many ties
    scores[1] += labels * 2.0
    aucs, covariance = delong_covariance(scores, labels)
    expected_aucs, expected = brute_delong(scores.tolist(), labels.tolist())
    assert aucs.tolist() == pytest.approx(expected_aucs, abs=1e-12)
    assert covariance.tolist() == [pytest.approx(row, abs=1e-12) for row in expected]
    assert aucs[1] == pytest.approx(roc_auc(scores[1], labels), abs=1e-12)


def test_standard_error_shrinks_like_one_over_sqrt_n_and_matches_the_bootstrap():
    generator = torch.Generator().manual_seed(0)
    labels = torch.rand(4000, generator=generator) < 0.5
    scores = labels * 0.8 + torch.randn(4000, generator=generator)
    small, large = auc_standard_error(scores[:1000], labels[:1000]), auc_standard_error(scores, labels)
    assert small / large == pytest.approx(2.0, rel=0.15)
    boot = torch.randint(0, 1000, (400, 1000), generator=generator)
    replicates = torch.tensor([roc_auc(scores[:1000][rows], labels[:1000][rows]) for rows in boot])
    assert small == pytest.approx(float(replicates.std()), rel=0.2)


def test_paired_difference_uses_the_correlation():
    generator = torch.Generator().manual_seed(1)
    labels = torch.rand(500, generator=generator) < 0.5
    base = labels * 1.0 + torch.randn(500, generator=generator)
    better = base + labels * 0.3  # the same scores plus a signal: strongly correlated with base
    report = auc_difference(better, base, labels)
    independent = (auc_standard_error(better, labels) ** 2 + auc_standard_error(base, labels) ** 2) ** 0.5
    assert report["gap"] == pytest.approx(roc_auc(better, labels) - roc_auc(base, labels))
    assert 0 < report["gap_se"] < independent / 2 and report["z"] > 3
    same = auc_difference(base, base, labels)
    assert same["gap"] == 0 and same["gap_se"] == 0 and same["z"] is None


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least 2 positives and 2 negatives"):
        auc_standard_error(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1, 0, 0]))
    with pytest.raises(ValueError, match="scores of shape"):
        delong_covariance(torch.zeros(2, 5), torch.tensor([1, 0, 1, 0]))
    with pytest.raises(ValueError, match="same samples"):
        auc_difference(torch.zeros(4), torch.zeros(5), torch.tensor([1, 0, 1, 0]))
    with pytest.raises(ValueError, match="NaN"):
        auc_standard_error(torch.tensor([0.1, float("nan"), 0.3, 0.4]), torch.tensor([1, 0, 1, 0]))


def test_paired_gaps_over_warm_and_cold_test_sets():
    import datasets

    from llmrec_ft.train.scoring import paired_auc_gaps
    test_sets = {"warm": datasets.Dataset.from_dict({"label": [1, 0, 1, 0, 1]}),
                 "cold": datasets.Dataset.from_dict({"label": [0, 1, 0]})}
    labels = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0])
    model, text = labels * 0.5 + torch.arange(8) / 10, torch.arange(8) / 10.0
    gaps = paired_auc_gaps(model, {"chance": None, "text": text}, test_sets)
    assert gaps["vs_chance"]["auc_b"] == 0.5 and gaps["vs_chance"]["auc_a"] == roc_auc(model, labels)
    assert gaps["vs_text"] == auc_difference(model, text, labels)
    assert paired_auc_gaps(model[:3], {"chance": None}, {"warm": datasets.Dataset.from_dict({"label": [1, 0, 0]})}) == {}
