"""ROC AUC for pointwise scores (e.g. an LLM's P("Yes") for "will the user like this item?").

Computed from ranks (Mann-Whitney U): AUC = P(score of a random positive > score of a random negative),
ties counting one half, which is what averaging the ranks of tied scores gives. O(n log n) in torch,
no scikit-learn needed.
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
