"""Pointwise matrix factorisation: CoLLM's MF baseline (``baseline_train_mf_ood.py`` in zyang1580/CoLLM).

``score(u, i) = <p_u, q_i>``, trained with binary cross-entropy on the Yes/No labels of the training rows
(mini-batch Adam, weight decay), early-stopped on validation AUC. Users and items never seen in training get
only the weight-decay gradient, which Adam scales up to full-size steps toward zero: their vectors shrink to about
zero, so cold scores tie near 0 (cold AUC at or near 0.5, ``mf_runs`` of ``benchmarks/results/paper_collm_gpu_*.json``)
-- MF is at chance on cold items, the gap CoLLM's paper is about.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmrec_ft.eval.auc import roc_auc


class MatrixFactorization(nn.Module):
    """``forward(users [B], items [B]) -> [B]`` logits; ids index the tables directly (0 may be a real id)."""

    def __init__(self, num_users: int, num_items: int, dim: int = 64, init_std: float = 0.1):
        super().__init__()
        self.user = nn.Embedding(num_users, dim)
        self.item = nn.Embedding(num_items, dim)
        nn.init.normal_(self.user.weight, std=init_std)
        nn.init.normal_(self.item.weight, std=init_std)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.user(users) * self.item(items)).sum(-1)


@dataclass
class MFTrainingConfig:
    dim: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 1024
    max_epochs: int = 200
    patience: int = 10
    seed: int = 0


def fit_mf(train: tuple[torch.Tensor, torch.Tensor, torch.Tensor], valid: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
           num_users: int, num_items: int, config: MFTrainingConfig | None = None) -> tuple[MatrixFactorization, dict]:
    """Train on ``(users, items, labels)`` ``[N]`` tensors (ids below ``num_users`` / ``num_items``); keep the
    epoch with the best validation AUC. Returns the model (best weights) and ``{"best_epoch",
    "best_valid_auc", "epochs"}``. Raises ``ValueError`` (from the AUC) if the validation labels are one class."""
    config = config or MFTrainingConfig()
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = MatrixFactorization(num_users, num_items, config.dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    users, items, labels = (t.long() for t in train)
    best, best_state, best_epoch, epoch = -1.0, None, -1, 0
    for epoch in range(config.max_epochs):
        model.train()
        for batch in torch.randperm(len(labels), generator=generator).split(config.batch_size):
            loss = F.binary_cross_entropy_with_logits(model(users[batch], items[batch]), labels[batch].float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        auc = roc_auc(predict(model, valid[0], valid[1]), valid[2])
        if auc > best:
            best, best_state, best_epoch = auc, copy.deepcopy(model.state_dict()), epoch
        elif epoch - best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    return model, {"best_epoch": best_epoch, "best_valid_auc": best, "epochs": epoch + 1}


@torch.no_grad()
def predict(model: MatrixFactorization, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``[N]`` sigmoid scores."""
    model.eval()
    return torch.sigmoid(model(users.long(), items.long()))
