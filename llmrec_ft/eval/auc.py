"""ROC AUC for pointwise scores (e.g. an LLM's P("Yes") for "will the user like this item?").

Computed from ranks (Mann-Whitney U): AUC = P(score of a random positive > score of a random negative),
ties counting one half, which is what averaging the ranks of tied scores gives. O(n log n) in torch,
no scikit-learn needed.

Standard errors are DeLong's (DeLong, DeLong & Clarke-Pearson 1988, "Comparing the areas under two or more
correlated ROC curves", Biometrics 44(3)), computed in O(n log n) from ranks as in Sun & Xu 2014 ("Fast
implementation of DeLong's algorithm", IEEE Signal Processing Letters 21(11), Eq. 5-8). DeLong's is the
field's standard for comparing two models scored on the *same* test samples: their AUCs are correlated, so
the standard error of the gap comes from the joint covariance, not from the two standard errors alone.
"""

from __future__ import annotations

import torch


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, tied values sharing the mean of the ranks they span."""
    sorted_values, order = values.sort()
    _, group, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    group_last_rank = counts.cumsum(0).to(torch.float64)
    group_mean_rank = group_last_rank - (counts.to(torch.float64) - 1) / 2
    ranks = torch.empty_like(group_mean_rank[group])
    ranks[order] = group_mean_rank[group]
    return ranks


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` (higher = more likely positive) against binary ``labels``."""
    scores = torch.as_tensor(scores).detach().reshape(-1).to(torch.float64)
    labels = torch.as_tensor(labels).detach().reshape(-1).to(scores.device)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.numel()} scores for {labels.numel()} labels")
    if torch.isnan(scores).any():
        raise ValueError(f"scores contain NaN (first at index {int(torch.isnan(scores).nonzero()[0])})")
    if not ((labels == 0) | (labels == 1)).all():
        raise ValueError("labels must be 0/1 (or bool)")
    labels = labels.bool()
    num_pos = int(labels.sum())
    num_neg = labels.numel() - num_pos
    if num_pos == 0 or num_neg == 0:
        raise ValueError(f"AUC needs both classes; got {num_pos} positives and {num_neg} negatives")
    positive_rank_sum = average_ranks(scores)[labels].sum()
    return float((positive_rank_sum - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg))


def user_auc(scores: torch.Tensor, labels: torch.Tensor, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-user ROC AUC, all users at once: ``(user_ids [U], auc [U])`` for the users that have both a positive
    and a negative sample (the others have no AUC and are left out).

    One sort by (user, score) gives every sample its rank inside its user's group, tied scores of one user
    sharing the mean rank; then each user's Mann-Whitney U comes from sums per group (``index_add_``).
    ``scores``/``labels``/``users``: ``[N]``; labels 0/1. Raises ``ValueError`` on mismatched shapes, NaN
    scores or non-binary labels."""
    scores = torch.as_tensor(scores).detach().reshape(-1).to(torch.float64)
    labels = torch.as_tensor(labels).detach().reshape(-1).to(scores.device)
    users = torch.as_tensor(users).detach().reshape(-1).to(scores.device)
    if not scores.shape == labels.shape == users.shape:
        raise ValueError(f"{scores.numel()} scores, {labels.numel()} labels and {users.numel()} users")
    if torch.isnan(scores).any():
        raise ValueError(f"scores contain NaN (first at index {int(torch.isnan(scores).nonzero()[0])})")
    if not ((labels == 0) | (labels == 1)).all():
        raise ValueError("labels must be 0/1 (or bool)")
    user_ids, group = torch.unique(users, return_inverse=True)
    by_score = scores.argsort(stable=True)
    order = by_score[group[by_score].argsort(stable=True)]  # sorted by user, then by score
    sorted_group, sorted_scores = group[order], scores[order]
    counts = torch.bincount(group, minlength=len(user_ids))
    group_start = counts.cumsum(0) - counts
    rank_in_user = torch.arange(len(order), device=scores.device) - group_start[sorted_group] + 1
    # ties: runs of equal (user, score) share the mean of their ranks
    _, tie, tie_counts = torch.unique_consecutive(torch.stack([sorted_group.to(torch.float64), sorted_scores], 1),
                                                  dim=0, return_inverse=True, return_counts=True)
    tie_rank_sum = torch.zeros(len(tie_counts), dtype=torch.float64, device=scores.device)
    tie_rank_sum.index_add_(0, tie, rank_in_user.to(torch.float64))
    ranks = (tie_rank_sum / tie_counts)[tie]
    positive = labels[order].to(torch.float64)
    num_pos = torch.zeros(len(user_ids), dtype=torch.float64, device=scores.device).index_add_(0, sorted_group,
                                                                                                 positive)
    rank_sum = torch.zeros_like(num_pos).index_add_(0, sorted_group, ranks * positive)
    num_neg = counts.to(torch.float64) - num_pos
    both = (num_pos > 0) & (num_neg > 0)
    auc = (rank_sum[both] - num_pos[both] * (num_pos[both] + 1) / 2) / (num_pos[both] * num_neg[both])
    return user_ids[both], auc


def uauc(scores: torch.Tensor, labels: torch.Tensor, users: torch.Tensor) -> float:
    """UAUC: the unweighted mean of per-user AUCs over users with both labels (:func:`user_auc`).

    This is CoLLM's ``uAUC_me`` (zyang1580/CoLLM, ``minigpt4/tasks/rec_base_task.py``: sklearn AUC per user,
    users with one class skipped, plain mean), which SASRecLLM's code reuses. Raises ``ValueError`` when no
    user has both labels."""
    user_ids, auc = user_auc(scores, labels, users)
    if len(user_ids) == 0:
        raise ValueError("UAUC needs at least one user with both a positive and a negative sample")
    return float(auc.mean())


def _as_scores_and_labels(scores, labels) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.as_tensor(scores).detach().to(torch.float64)
    scores = scores.reshape(1, -1) if scores.dim() <= 1 else scores
    labels = torch.as_tensor(labels).detach().reshape(-1).to(scores.device)
    if scores.dim() != 2 or scores.shape[1] != labels.numel():
        raise ValueError(f"scores of shape {tuple(scores.shape)} for {labels.numel()} labels; expected [N] or [K, N]")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if not ((labels == 0) | (labels == 1)).all():
        raise ValueError("labels must be 0/1 (or bool)")
    labels = labels.bool()
    num_pos = int(labels.sum())
    if num_pos < 2 or labels.numel() - num_pos < 2:
        raise ValueError(f"a DeLong standard error needs at least 2 positives and 2 negatives; got {num_pos} "
                         f"positives and {labels.numel() - num_pos} negatives")
    return scores, labels


def delong_covariance(scores, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """AUCs ``[K]`` and their DeLong covariance ``[K, K]`` for ``K`` models scored on the same ``N`` samples.

    ``scores``: ``[N]`` or ``[K, N]`` (higher = more likely positive); ``labels``: ``[N]`` 0/1. With ``m``
    positives and ``n`` negatives, each positive's structural component is the fraction of negatives it
    outranks, ``V10 = (rank among all - rank among positives) / n``, and each negative's is the fraction of
    positives that outrank it, ``V01 = 1 - (rank among all - rank among negatives) / m`` (mid-ranks, so ties
    count one half); ``Cov = Cov(V10) / m + Cov(V01) / n`` (Sun & Xu 2014, Eq. 5-8). Raises ``ValueError``
    for mismatched shapes, NaN scores, non-binary labels, or fewer than 2 samples of a class.
    """
    scores, labels = _as_scores_and_labels(scores, labels)
    positives, negatives = scores[:, labels], scores[:, ~labels]
    m, n = positives.shape[1], negatives.shape[1]
    rank = lambda rows: torch.stack([average_ranks(row) for row in rows])  # noqa: E731
    combined = rank(torch.cat([positives, negatives], dim=1))
    v10 = (combined[:, :m] - rank(positives)) / n  # [K, m]
    v01 = 1 - (combined[:, m:] - rank(negatives)) / m  # [K, n]
    aucs = v10.mean(dim=1)
    covariance = torch.atleast_2d(torch.cov(v10)) / m + torch.atleast_2d(torch.cov(v01)) / n
    return aucs, covariance


def auc_standard_error(scores, labels) -> float:
    """DeLong standard error of one model's AUC (``scores`` ``[N]``, ``labels`` ``[N]`` 0/1)."""
    _, covariance = delong_covariance(torch.as_tensor(scores).reshape(-1), labels)
    return float(covariance[0, 0].clamp(min=0).sqrt())


def auc_difference(scores_a, scores_b, labels) -> dict:
    """Paired comparison of two models on the same samples: ``{"auc_a", "auc_b", "gap" (= a - b), "gap_se",
    "z"}``, the gap's standard error from DeLong's joint covariance (``Var a + Var b - 2 Cov``).
    ``z`` is ``gap / gap_se`` (``None`` when the standard error is 0, e.g. identical scores)."""
    scores_a, scores_b = torch.as_tensor(scores_a).reshape(-1), torch.as_tensor(scores_b).reshape(-1)
    if scores_a.shape != scores_b.shape:
        raise ValueError(f"paired AUCs need scores for the same samples; got {scores_a.numel()} and "
                         f"{scores_b.numel()}")
    aucs, cov = delong_covariance(torch.stack([scores_a, scores_b]), labels)
    gap = float(aucs[0] - aucs[1])
    gap_se = float((cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]).clamp(min=0).sqrt())
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "gap": gap, "gap_se": gap_se,
            "z": gap / gap_se if gap_se > 0 else None}
