"""Evaluation: full-ranking / sampled top-K metrics and AUC, vectorised in torch (no Hub downloads)."""

from llmrec_ft.eval.auc import roc_auc, uauc, user_auc
from llmrec_ft.eval.ranking import (RankingAccumulator, candidate_metrics, flatten_report, full_ranking_metrics,
                                    metrics_from_counts, sample_negatives, sampled_ranking_metrics)

__all__ = ["RankingAccumulator", "candidate_metrics", "flatten_report", "full_ranking_metrics", "metrics_from_counts",
           "roc_auc", "sample_negatives", "sampled_ranking_metrics", "uauc", "user_auc"]
