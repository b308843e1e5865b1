"""Top-K ranking metrics (HR@K, NDCG@K, MRR@K) over the full catalog or sampled candidates, in torch.

Why our own and not ``evaluate.load(...)``: HF ``evaluate`` downloads metric scripts from the Hub at run
time, which is impossible offline, and none of its metrics masks a user's history. Here a metric is a few
tensor ops on the ``[B, num_items + 1]`` score matrix, on whatever device the scores live.

Conventions (the leave-one-out protocol of SASRec and RecBole, one relevant item per user):

* Column 0 of ``scores`` is padding and is never ranked.
* Items in the user's ``history`` are removed from the ranking (the user already has them), except the
  target itself, which is never masked (repeat consumption stays measurable).
* ``rank`` is 0-based: HR@K = [rank < K], NDCG@K = 1/log2(rank + 2) if rank < K (the ideal DCG of one
  relevant item is 1), MRR@K = 1/(rank + 1) if rank < K.
* Ties: the target's rank is uniformly random among the items scored exactly like it, and we return the
  *expected* metric over that tie-break. That is deterministic, and a constant scorer gets chance level
  instead of a perfect (optimistic) or zero (pessimistic) score, as ``topk``-based code would give.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

History = Sequence[Sequence[int]] | torch.Tensor


def _padded_history(history: History, batch_size: int, device: torch.device) -> torch.Tensor:
    """A list of lists (or an already padded tensor, 0 = pad) as a ``[B, L]`` long tensor on ``device``."""
    if isinstance(history, torch.Tensor):
        padded = history.to(device=device, dtype=torch.long)
        if padded.dim() != 2:
            raise ValueError(f"history tensor must be [batch, length], got shape {tuple(padded.shape)}")
    else:
        width = max((len(row) for row in history), default=0)
        padded = torch.zeros(len(history), max(width, 1), dtype=torch.long)
        for row, items in enumerate(history):
            padded[row, : len(items)] = torch.as_tensor(list(items), dtype=torch.long)
        padded = padded.to(device)
    if padded.shape[0] != batch_size:
        raise ValueError(f"history has {padded.shape[0]} rows but scores has {batch_size}")
    return padded


def _check_inputs(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if scores.dim() != 2:
        raise ValueError(f"scores must be [batch, num_items + 1], got shape {tuple(scores.shape)}")
    targets = targets.to(device=scores.device, dtype=torch.long).reshape(-1)
    if targets.shape[0] != scores.shape[0]:
        raise ValueError(f"{targets.shape[0]} targets for {scores.shape[0]} score rows")
    bad = (targets < 1) | (targets >= scores.shape[1])
    if bad.any():
        row = int(bad.nonzero()[0])
        raise ValueError(f"target {int(targets[row])} in row {row} is outside the item ids 1..{scores.shape[1] - 1}")
    if torch.isnan(scores).any():
        row = int(torch.isnan(scores).any(1).nonzero()[0])
        raise ValueError(f"scores contain NaN (first in row {row})")
    return targets


def unseen_items(num_items: int, targets: torch.Tensor, history: History) -> torch.Tensor:
    """``[B, num_items + 1]`` bool on ``targets.device``: the items the full-catalog protocol ranks
    (not padding, not in the history, or the target)."""
    allowed = torch.ones(len(targets), num_items + 1, dtype=torch.bool, device=targets.device)
    allowed[:, 0] = False
    allowed.scatter_(1, _padded_history(history, len(targets), targets.device), False)  # pad 0 -> column 0
    allowed.scatter_(1, targets[:, None], True)
    return allowed


def metrics_from_counts(greater: torch.Tensor, ties: torch.Tensor, ks: Sequence[int]) -> dict[str, torch.Tensor]:
    """Expected HR/NDCG/MRR@K per user from the number of candidates scored above (``greater``) and equal to
    (``ties``, the target excluded) the target. The rank is uniform on ``greater .. greater + ties``, so each
    expectation is a difference of prefix sums of the per-rank gain, divided by ``ties + 1``."""
    greater, ties = greater.long(), ties.long()
    out = {}
    for k in ks:
        ranks = torch.arange(k, dtype=torch.float64, device=greater.device)
        gains = {"hr": torch.ones_like(ranks), "ndcg": 1.0 / torch.log2(ranks + 2), "mrr": 1.0 / (ranks + 1)}
        high = (greater + ties + 1).clamp(max=k)
        low = greater.clamp(max=k)
        for name, gain in gains.items():
            prefix = torch.cat([gain.new_zeros(1), gain.cumsum(0)])
            out[f"{name}@{k}"] = ((prefix[high] - prefix[low]) / (ties + 1)).float()
    return out


def _rank_counts(scores: torch.Tensor, targets: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    target_scores = scores.gather(1, targets[:, None])
    greater = ((scores > target_scores) & candidates).sum(1)
    ties = ((scores == target_scores) & candidates).sum(1) - 1  # the target ties with itself
    return greater, ties


def full_ranking_metrics(scores: torch.Tensor, targets: torch.Tensor, history: History,
                         ks: Sequence[int] = (10, 20)) -> dict[str, torch.Tensor]:
    """Per-user ``{"hr@K", "ndcg@K", "mrr@K"}`` (``[B]`` float tensors; ``.mean()`` them) ranking the target
    against every item the user has not interacted with."""
    targets = _check_inputs(scores, targets)
    return metrics_from_counts(*_rank_counts(scores, targets, unseen_items(scores.shape[1] - 1, targets, history)), ks)


def sample_negatives(targets: torch.Tensor, history: History, num_items: int, num_negatives: int = 99,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``[B, num_negatives]`` item ids drawn uniformly without replacement from the items that are neither
    in the user's history nor the target (the sampled protocol of NCF/SASRec papers).

    Drawn on the CPU from ``generator`` so a seed gives the same candidates on any device. A model that is
    expensive to score (an LLM) can score only ``[target, *negatives]`` and use :func:`candidate_metrics`.
    """
    targets = targets.detach().to("cpu", torch.long).reshape(-1)
    if ((targets < 1) | (targets > num_items)).any():
        raise ValueError(f"targets must be item ids 1..{num_items}")
    allowed = unseen_items(num_items, targets, history)
    allowed.scatter_(1, targets[:, None], False)
    available = allowed.sum(1)
    if (available < num_negatives).any():
        row = int((available < num_negatives).nonzero()[0])
        raise ValueError(f"row {row}: only {int(available[row])} unseen items to sample {num_negatives} negatives from")
    keys = torch.rand(allowed.shape, generator=generator).masked_fill_(~allowed, 2.0)
    return keys.topk(num_negatives, dim=1, largest=False).indices


def candidate_metrics(candidate_scores: torch.Tensor, ks: Sequence[int] = (10, 20)) -> dict[str, torch.Tensor]:
    """Per-user metrics when only candidates were scored: column 0 is the target, the rest are negatives."""
    if torch.isnan(candidate_scores).any():
        raise ValueError("candidate_scores contain NaN")
    target = candidate_scores[:, :1]
    greater = (candidate_scores[:, 1:] > target).sum(1)
    ties = (candidate_scores[:, 1:] == target).sum(1)
    return metrics_from_counts(greater, ties, ks)


def sampled_ranking_metrics(scores: torch.Tensor, targets: torch.Tensor, history: History,
                            ks: Sequence[int] = (10, 20), num_negatives: int = 99,
                            generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Like :func:`full_ranking_metrics`, but the target only competes with ``num_negatives`` sampled items."""
    targets = _check_inputs(scores, targets)
    negatives = sample_negatives(targets, history, scores.shape[1] - 1, num_negatives, generator).to(scores.device)
    return candidate_metrics(torch.cat([scores.gather(1, targets[:, None]), scores.gather(1, negatives)], 1), ks)


class RankingAccumulator:
    """Collects per-user metrics batch by batch; :meth:`compute` averages them overall and by warm/cold.

    ``num_negatives=None`` is the full-ranking protocol; an int switches to sampled candidates, drawn from a
    generator seeded once with ``seed`` so the whole evaluation is reproducible.
    """

    def __init__(self, ks: Sequence[int] = (10, 20), num_negatives: int | None = None, seed: int = 0):
        self.ks = tuple(ks)
        self.num_negatives = num_negatives
        self.generator = torch.Generator().manual_seed(seed)
        self._metrics: list[dict[str, torch.Tensor]] = []
        self._cold: list[torch.Tensor | None] = []

    def add(self, scores: torch.Tensor, targets: torch.Tensor, history: History,
            cold: torch.Tensor | Sequence[bool] | None = None) -> None:
        """``cold``: optional per-user bool (e.g. the target item is cold); enables the warm/cold groups."""
        if self.num_negatives is None:
            metrics = full_ranking_metrics(scores, targets, history, self.ks)
        else:
            metrics = sampled_ranking_metrics(scores, targets, history, self.ks, self.num_negatives, self.generator)
        self._metrics.append({name: value.detach().cpu() for name, value in metrics.items()})
        if cold is not None:
            cold = torch.as_tensor(cold, dtype=torch.bool).cpu().reshape(-1)
            if cold.shape[0] != scores.shape[0]:
                raise ValueError(f"cold mask has {cold.shape[0]} entries for {scores.shape[0]} users")
        self._cold.append(cold)

    def compute(self) -> dict[str, dict[str, float]]:
        """``{"all": {metric: mean, "num_users": n}}`` plus ``"warm"``/``"cold"`` when cold masks were given
        (a group with no user reports only ``num_users: 0``)."""
        if not self._metrics:
            raise ValueError("RankingAccumulator.compute() called before any add()")
        per_user = {name: torch.cat([batch[name] for batch in self._metrics]) for name in self._metrics[0]}
        groups = {"all": torch.ones(len(next(iter(per_user.values()))), dtype=torch.bool)}
        if any(mask is not None for mask in self._cold):
            if any(mask is None for mask in self._cold):
                raise ValueError("pass a cold mask to every add() call or to none")
            cold = torch.cat(self._cold)
            groups.update(warm=~cold, cold=cold)
        report = {}
        for group, mask in groups.items():
            count = int(mask.sum())
            report[group] = {"num_users": count}
            if count:
                report[group].update({name: float(values[mask].double().mean()) for name, values in per_user.items()})
        return report


def flatten_report(report: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{"all": {"ndcg@10": x}, "cold": {...}}`` -> ``{"ndcg@10": x, "cold/ndcg@10": ...}`` for loggers."""
    flat = {}
    for group, metrics in report.items():
        for name, value in metrics.items():
            flat[name if group == "all" else f"{group}/{name}"] = value
    return flat
