"""FreLLM4Rec as the authors' code trains and evaluates it (``protocol: authors``), with a switch for its TFM leak.

Read from github.com/BDML-lab/FreLLM4Rec (commit 1e12825): ``models/llama_for_rec.py`` (model, G-LPF, loss,
scoring), ``models/projector.py`` (TFM ``FilterLayer``), ``data.py`` (negatives), ``evaluation.py`` (metrics),
``main.py`` (last-token item text) and ``run_main.sh`` (hyper-parameters). What we reproduce:

* **Item embeddings** (``get_all_item_embeddings``): SASRec ID vector -> ``Linear(e, H)``; item text -> 2-layer
  ReLU MLP ``(d -> fusion_size -> H)``; G-LPF ``(1 - a) X + a A X`` on *each projected* modality; a LayerNorm
  each; a sigmoid gate ``g = sigmoid(Linear(2H, H)([id | text]))`` fuses them as ``g * id + (1 - g) * text``.
  Xavier-normal init, zero biases. The fused vectors go to the LM unscaled (their LayerNorms learn the scale).
* **Item text**: the backbone's final hidden state at the last token of the title (``main.py``).
* **TFM**: after every decoder layer, the Butterworth low-pass along time, then dropout (p = 0.2) in training.
* **Readout**: a trainable LayerNorm (``ln_f``) on the final hidden states; score = plain dot product with the
  fused item embedding (no output projection: their default ``out_type=0``).
* **Training**: each row is a user's history followed by its next item; *every* position predicts the item
  after it against ``num_negatives`` items drawn uniformly from the catalogue excluding only the row's last
  item (shared by all positions of the row), softmax cross-entropy with the positive in column 0.
* **Evaluation**: the newest position's state ranks the target among 99 uniformly drawn items (history not
  excluded, only the target); we also report full-catalogue ranking with the history masked.

The leak: TFM mixes positions both ways in time, and the training row contains the targets, so the state at
position t (which must predict item t + 1) has already seen item t + 1's embedding after the first layer.
``tfm_leak=True`` keeps that (their code). ``tfm_leak=False`` filters causally
(:func:`~llmrec_ft.filters.tfm.causal_butterworth_operator`: position t is filtered over 0..t only, as if the
sequence ended there), in training and evaluation alike. We chose the causal filter over "train the last
position only" because it keeps the authors' per-position loss, so leak/no-leak differ in the leak alone.

Differences that remain: the graph is our co-occurrence graph of the training sequences
(:mod:`~llmrec_ft.filters.graph`), not their top-10 item-kNN graph built from the test histories
(``GraphBuilder.py``); TFM filters each history over its real positions (theirs runs the FFT over the
right-padded width, so padding states leak into real ones) and keeps the continuous cutoff; a training row is
the newest ``max_len`` items ending with the target (theirs truncates history + target to ``max_seq_len``,
which drops the target when the history is full); ties in the sampled ranking count as the expected rank.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from llmrec_ft.collab.sequences import left_pad, ranking_batches
from llmrec_ft.eval.ranking import RankingAccumulator
from llmrec_ft.filters.frellm4rec import FreLLM4RecConfig
from llmrec_ft.filters.graph import normalized_adjacency
from llmrec_ft.filters.hooks import map_layer_outputs
from llmrec_ft.filters.tfm import apply_temporal_operators, temporal_operators


def _sparse(adjacency: sp.spmatrix) -> torch.Tensor:
    coo = adjacency.tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col])).long()
    return torch.sparse_coo_tensor(indices, torch.from_numpy(coo.data).float(), coo.shape,
                                   check_invariants=True).coalesce()


class GatedItemFusion(nn.Module):
    """``(id [N, e], text [N, d]) -> [N, H]`` fused item embeddings, G-LPF after each projection (see module doc).

    ``adjacency``: ``[N, N]`` normalised co-occurrence graph (None = no G-LPF); ``alpha``: G-LPF weight.
    """

    def __init__(self, id_size: int, text_size: int, hidden_size: int, fusion_size: int,
                 adjacency: sp.spmatrix | None = None, alpha: float = 0.7):
        super().__init__()
        if not 0 <= alpha <= 1:
            raise ValueError(f"G-LPF alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.id_projection = nn.Linear(id_size, hidden_size)
        self.text_projection = nn.Sequential(nn.Linear(text_size, fusion_size), nn.ReLU(),
                                             nn.Linear(fusion_size, hidden_size))
        self.id_norm, self.text_norm = nn.LayerNorm(hidden_size), nn.LayerNorm(hidden_size)
        self.gate = nn.Linear(2 * hidden_size, hidden_size)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)
        self.register_buffer("adjacency", None if adjacency is None else _sparse(adjacency), persistent=False)

    def _low_pass(self, x: torch.Tensor) -> torch.Tensor:
        if self.adjacency is None:
            return x
        return (1 - self.alpha) * x + self.alpha * torch.sparse.mm(self.adjacency, x.float()).to(x.dtype)

    def forward(self, id_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        ids = self.id_norm(self._low_pass(self.id_projection(id_features)))
        text = self.text_norm(self._low_pass(self.text_projection(text_features)))
        gate = torch.sigmoid(self.gate(torch.cat([ids, text], -1)))
        return gate * ids + (1 - gate) * text


class FreLLM4RecAuthors(nn.Module):
    """The authors' FreLLM4Rec on a frozen HF causal LM.

    ``forward(input_ids [B, L] left-padded sequences ending with a target, negatives [B, N]) -> {"loss"}``
    (per-position sampled softmax); ``score_all_items(input_ids [B, L] histories) -> [B, num_items + 1]``.
    ``id_embeddings`` ``[num_items + 1, e]``, ``text_embeddings`` ``[num_items + 1, d]`` (row 0 = padding);
    ``graph`` (:func:`~llmrec_ft.filters.graph.cooccurrence_graph`) is required when ``config.glpf``.
    Raises ``ValueError`` for mismatched tables, a missing graph, or histories that are not left-padded.
    """

    def __init__(self, backbone: nn.Module, id_embeddings: torch.Tensor, text_embeddings: torch.Tensor,
                 config: FreLLM4RecConfig, graph: sp.spmatrix | None = None):
        super().__init__()
        if id_embeddings.shape[0] != text_embeddings.shape[0]:
            raise ValueError(f"{id_embeddings.shape[0]} ID embeddings but {text_embeddings.shape[0]} text embeddings "
                             "(both need one row per item id, row 0 = padding)")
        if config.glpf and graph is None:
            raise ValueError("config.glpf needs the co-occurrence graph (llmrec_ft.filters.graph.cooccurrence_graph)")
        self.config = config
        self.backbone = backbone.requires_grad_(False).eval()
        self.register_buffer("id_features", id_embeddings.detach().cpu().float())
        self.register_buffer("text_features", text_embeddings.detach().cpu().float())
        hidden_size = backbone.config.hidden_size
        self.fusion = GatedItemFusion(id_embeddings.shape[1], text_embeddings.shape[1], hidden_size,
                                      config.fusion_size, normalized_adjacency(graph) if config.glpf else None,
                                      config.glpf_alpha)
        self.final_norm = nn.LayerNorm(hidden_size)  # their ln_f
        self.tfm_dropout = nn.Dropout(config.tfm_dropout)

    def train(self, mode: bool = True):
        """The frozen LM stays in eval mode; TFM's dropout follows ``mode``."""
        super().train(mode)
        self.backbone.eval()
        return self

    def item_embeddings(self) -> torch.Tensor:
        """``[num_items + 1, hidden]`` fused item embeddings (row 0 = padding, never scored)."""
        return self.fusion(self.id_features, self.text_features)

    def _tfm(self, mask: torch.Tensor):
        if not self.config.tfm:
            return contextlib.nullcontext()
        operators = temporal_operators(mask, self.config.tfm_cutoff, self.config.tfm_order, self.config.tfm_strength,
                                       causal=not self.config.tfm_leak)
        return map_layer_outputs(self.backbone, lambda index, hidden: self.tfm_dropout(
            apply_temporal_operators(hidden, mask, operators)), prepend=True)

    def sequence_states(self, input_ids: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, L, hidden]``: ``ln_f`` of the LM's final hidden states over the left-padded item sequence."""
        if input_ids.shape[1] > self.config.max_len:
            raise ValueError(f"sequence of {input_ids.shape[1]} items > max_len {self.config.max_len}; keep the newest")
        if input_ids[:, -1].eq(0).any():
            raise ValueError(f"row {int(input_ids[:, -1].eq(0).nonzero()[0])} ends with padding; sequences must be "
                             "left-padded and non-empty")
        items = self.item_embeddings() if items is None else items
        mask = input_ids.ne(0).long()
        decoder = self.backbone.get_decoder() if hasattr(self.backbone, "get_decoder") else self.backbone
        with self._tfm(mask):
            hidden = decoder(inputs_embeds=items[input_ids], attention_mask=mask, use_cache=False).last_hidden_state
        return self.final_norm(hidden)

    def score_all_items(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, num_items + 1]`` dot-product scores of the newest position; column 0 (padding) is ``-inf``."""
        items = self.item_embeddings()
        scores = self.sequence_states(input_ids, items)[:, -1] @ items.T
        scores[:, 0] = float("-inf")
        return scores

    def forward(self, input_ids: torch.Tensor, negatives: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-position sampled softmax (``llama_for_rec.py``, training branch): position t scores item t + 1
        against the row's ``negatives``; the loss averages over positions whose input and target are real."""
        if input_ids.shape[1] < 2:
            raise ValueError("training sequences need at least 2 items (an input and its next item)")
        items = self.item_embeddings()
        states = self.sequence_states(input_ids, items)[:, :-1]  # [B, L-1, H]
        positives = input_ids[:, 1:]
        positive_logits = (states * items[positives]).sum(-1, keepdim=True)  # [B, L-1, 1]
        negative_logits = states @ items[negatives].transpose(1, 2)  # [B, L-1, N]
        logits = torch.cat([positive_logits, negative_logits], -1)
        valid = input_ids[:, :-1].ne(0) & positives.ne(0)
        loss = F.cross_entropy(logits[valid].float(), torch.zeros(int(valid.sum()), dtype=torch.long,
                                                                   device=logits.device))
        return {"loss": loss}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything but the frozen LM (the item feature tables included)."""
        return {name: tensor for name, tensor in self.state_dict().items() if not name.startswith("backbone.")}


def sequence_examples(train: datasets.Dataset, max_len: int) -> datasets.Dataset:
    """One ``{"input_ids": the newest <= max_len items ending at item t}`` row per transition t >= 1 of each
    training sequence (their data has one row per (history, next item) pair). ``ValueError`` names the row
    with an item id < 1 or a split with nothing to learn."""
    if max_len < 2:
        raise ValueError(f"max_len={max_len}: the authors' protocol needs at least 2 positions")
    rows = []
    for row, items in enumerate(train["items"]):
        if any(item < 1 for item in items):
            raise ValueError(f"train split, row {row + 1}: item ids must be >= 1 (0 is padding)")
        rows += [items[max(0, t + 1 - max_len): t + 1] for t in range(1, len(items))]
    if not rows:
        raise ValueError("train split has no user with two or more items: nothing to learn from")
    return datasets.Dataset.from_dict({"input_ids": rows})


def uniform_negatives(excluded: torch.Tensor, num_items: int, num_negatives: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``[B, num_negatives]`` distinct ids drawn uniformly from ``1..num_items`` minus ``excluded[b]`` (``data.py``:
    only the next item is excluded, not the history)."""
    if num_negatives > num_items - 1:
        raise ValueError(f"{num_negatives} negatives from a catalogue of {num_items} items")
    keys = torch.rand(len(excluded), num_items + 1, generator=generator)
    keys[:, 0] = 2.0
    keys.scatter_(1, excluded.reshape(-1, 1).cpu(), 2.0)
    return keys.topk(num_negatives, dim=1, largest=False).indices


@dataclass
class SequenceCollator:
    """Left-pads a batch of :func:`sequence_examples` rows and draws each row's negatives (seeded once)."""

    num_items: int
    num_negatives: int = 99
    seed: int = 0

    def __post_init__(self):
        self.generator = torch.Generator().manual_seed(self.seed)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        input_ids = left_pad([feature["input_ids"] for feature in features])
        return {"input_ids": input_ids,
                "negatives": uniform_negatives(input_ids[:, -1], self.num_items, self.num_negatives, self.generator)}


@torch.no_grad()
def rank_full_and_sampled(model: nn.Module, examples: datasets.Dataset, num_negatives: int = 99,
                          ks: Sequence[int] = (10, 20), batch_size: int = 64, seed: int = 0) -> dict[str, dict]:
    """Both protocols from one scoring pass over a valid/test split (any model with ``config.max_len`` and
    ``score_all_items``): ``{"full": full-catalogue report, history masked; "sampled": the target among
    ``num_negatives`` uniform items, history not excluded (``evaluation.py``)}``, each as
    :meth:`~llmrec_ft.eval.ranking.RankingAccumulator.compute` returns it."""
    was_training = model.training
    model.eval()
    full = RankingAccumulator(ks)
    sampled = RankingAccumulator(ks, num_negatives=num_negatives, seed=seed)
    device = next(model.parameters()).device
    try:
        for batch in ranking_batches(examples, model.config.max_len, batch_size):
            scores = model.score_all_items(batch["input_ids"].to(device)).float()
            targets = batch["targets"].to(device)
            full.add(scores, targets, batch["history"].to(device), batch["cold"])
            no_history = torch.zeros(len(targets), 1, dtype=torch.long, device=device)  # only the target excluded
            sampled.add(scores, targets, no_history, batch["cold"])
    finally:
        model.train(was_training)
    return {"full": full.compute(), "sampled": sampled.compute()}


def build_frellm4rec(backbone: nn.Module, id_embeddings: torch.Tensor, text_embeddings: torch.Tensor,
                     config: FreLLM4RecConfig, graph: sp.spmatrix | None = None) -> nn.Module:
    """:class:`~llmrec_ft.filters.frellm4rec.FreLLM4Rec` for ``protocol: ours``, :class:`FreLLM4RecAuthors` for
    ``protocol: authors`` (same arguments)."""
    from llmrec_ft.filters.frellm4rec import FreLLM4Rec

    model_class = FreLLM4RecAuthors if config.protocol == "authors" else FreLLM4Rec
    return model_class(backbone, id_embeddings, text_embeddings, config, graph)


def frellm4rec_training_data(train: datasets.Dataset, config: FreLLM4RecConfig, num_items: int, seed: int = 0):
    """``(train_dataset, data_collator)`` for ``transformers.Trainer`` under ``config.protocol``: last-position
    histories (ours) or whole sequences with sampled negatives (authors)."""
    from llmrec_ft.filters.frellm4rec import collate_histories, next_item_examples

    if config.protocol == "authors":
        return sequence_examples(train, config.max_len), SequenceCollator(num_items, config.num_negatives, seed)
    return next_item_examples(train, config.max_len), collate_histories
