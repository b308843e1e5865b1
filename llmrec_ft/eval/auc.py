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
