"""FreLLM4Rec (arXiv 2508.10312): a frozen causal LM reads a user's history as fused item embeddings.

Pipeline (one box per idea, each in its own file):

1. Item features: the SASRec ID embedding and the LM's own text embedding of the item
   (:func:`llmrec_ft.llm.text_embeddings.item_text_embeddings`), side by side.
2. G-LPF (:mod:`~llmrec_ft.filters.glpf`): the features smoothed over the co-occurrence graph, once.
3. Fusion MLP (trainable): features -> unit-RMS vectors of the LM's hidden size; fed to the LM at the
   scale of its token embeddings.
4. The frozen LM reads the user's last ``max_len`` items as ``inputs_embeds``; with TFM
   (:mod:`~llmrec_ft.filters.tfm`) every decoder layer's output is low-passed along time.
5. Scoring: the last position's final hidden state, through a trainable projection, dotted with every
   fused item embedding (the same table as the inputs, like tied word embeddings) over sqrt(hidden);
   softmax cross-entropy over the full catalogue.

Only the fusion MLP and the output projection train; the LM is frozen and kept in eval mode. The
authors' code scores sampled candidates with per-position losses; we train and score the last position
only over the full catalogue, which keeps the non-causal TFM from seeing a training target.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import datasets
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from llmrec_ft.collab.sequences import left_pad
from llmrec_ft.filters.glpf import graph_low_pass
from llmrec_ft.filters.graph import normalized_adjacency
from llmrec_ft.filters.spectral_energy import layerwise_low_frequency_energy, recorded_layer_outputs
from llmrec_ft.filters.tfm import temporal_frequency_modulation
from llmrec_ft.io import atomic_path


PROTOCOLS = ("ours", "authors")


@dataclass
class FreLLM4RecConfig:
    """The model's knobs; defaults follow the authors' released run script where it sets them."""

    max_len: int = 20  # items of history the LM reads (the newest ones)
    fusion_size: int = 1024  # hidden width of the fusion MLP (authors: 512 or 1000)
    glpf: bool = True
    glpf_alpha: float = 0.7  # authors' graph_conv_weight default
    glpf_order: int = 1  # authors: one propagation step
    tfm: bool = True
    tfm_cutoff: float = 0.1  # fraction of Nyquist; authors' init_fa
    tfm_order: int = 2  # authors' Butterworth order
    tfm_strength: float = 1.0  # 1 = replace the layer output by the filtered one (authors)
    # protocol "authors" (llmrec_ft.filters.frellm4rec_authors): their model, per-position loss and metric.
    protocol: str = "ours"  # "ours" | "authors"
    tfm_leak: bool = True  # authors only: non-causal TFM over sequences holding the targets (their code)
    tfm_dropout: float = 0.2  # authors only: dropout after each TFM filter (their hidden_dropout_prob)
    num_negatives: int = 99  # authors only: uniform negatives per training row and per evaluated user

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")


class ItemFusion(nn.Module):
    """``[ID | text]`` item features -> unit-RMS vectors of the LM's hidden size.

    Each modality is layer-normed first (a 64-d SASRec vector and a 576-d LM state live on very different
    scales), the MLP mixes them, and the output is normalised; the model rescales it for the LM's input.
    """

    def __init__(self, id_size: int, text_size: int, hidden_size: int, fusion_size: int):
        super().__init__()
        self.id_size = id_size
        self.id_norm = nn.LayerNorm(id_size)
        self.text_norm = nn.LayerNorm(text_size)
        self.mlp = nn.Sequential(nn.Linear(id_size + text_size, fusion_size), nn.GELU(),
                                 nn.Linear(fusion_size, hidden_size))
        self.output_norm = nn.LayerNorm(hidden_size, elementwise_affine=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        id_part, text_part = features[:, : self.id_size], features[:, self.id_size:]
        return self.output_norm(self.mlp(torch.cat([self.id_norm(id_part), self.text_norm(text_part)], -1)))


class FreLLM4Rec(nn.Module):
    """``forward(input_ids [B, L] left-padded item ids, labels [B] next item) -> {"loss", "logits"}``."""

    def __init__(self, backbone: nn.Module, id_embeddings: torch.Tensor, text_embeddings: torch.Tensor,
                 config: FreLLM4RecConfig, graph: sp.spmatrix | None = None):
        """``id_embeddings`` ``[num_items + 1, e]`` and ``text_embeddings`` ``[num_items + 1, d]`` (row 0 =
        padding); ``graph`` = :func:`~llmrec_ft.filters.graph.cooccurrence_graph`, required when ``config.glpf``."""
        super().__init__()
        if id_embeddings.shape[0] != text_embeddings.shape[0]:
            raise ValueError(f"{id_embeddings.shape[0]} ID embeddings but {text_embeddings.shape[0]} text embeddings "
                             "(both need one row per item id, row 0 = padding)")
        self.config = config
        self.backbone = backbone.requires_grad_(False).eval()
        features = torch.cat([id_embeddings.detach().cpu().float(), text_embeddings.detach().cpu().float()], -1)
        if config.glpf:
            if graph is None:
                raise ValueError("config.glpf needs the co-occurrence graph "
                                 "(llmrec_ft.filters.graph.cooccurrence_graph)")
            features = graph_low_pass(features, normalized_adjacency(graph), config.glpf_alpha, config.glpf_order)
        self.register_buffer("item_features", features)
        hidden_size = backbone.config.hidden_size
        # A frozen LM only behaves sensibly on inputs at the scale of its own token embeddings.
        self.input_scale = float(backbone.get_input_embeddings().weight.detach().float().pow(2).mean().sqrt())
        self.fusion = ItemFusion(id_embeddings.shape[1], text_embeddings.shape[1], hidden_size, config.fusion_size)
        self.output_projection = nn.Linear(hidden_size, hidden_size)
        with torch.no_grad():  # start as the plain dot product (the authors have no projection)
            self.output_projection.weight.copy_(torch.eye(hidden_size))
            self.output_projection.bias.zero_()

    def decoder(self) -> nn.Module:
        """The LM without its vocabulary head (we never need ``[B, L, vocab]`` logits)."""
        return self.backbone.get_decoder() if hasattr(self.backbone, "get_decoder") else self.backbone

    def train(self, mode: bool = True):
        """The frozen LM stays in eval mode (no dropout), whatever the Trainer asks of the wrapper."""
        super().train(mode)
        self.backbone.eval()
        return self

    def item_embeddings(self) -> torch.Tensor:
        """``[num_items + 1, hidden]`` unit-RMS fused item embeddings (row 0 = padding, never scored)."""
        return self.fusion(self.item_features)

    def _read_history(self, input_ids: torch.Tensor, items: torch.Tensor, tfm: bool) -> torch.Tensor:
        """``[B, L, hidden]`` final hidden states of the LM over the (left-padded) history embeddings."""
        if input_ids.shape[1] > self.config.max_len:
            raise ValueError(f"history of {input_ids.shape[1]} items > max_len {self.config.max_len}; keep the newest")
        if input_ids[:, -1].eq(0).any():
            raise ValueError(f"row {int(input_ids[:, -1].eq(0).nonzero()[0])} ends with padding; histories must be "
                             "left-padded and non-empty")
        mask = input_ids.ne(0).long()
        filters = (temporal_frequency_modulation(self.backbone, mask, self.config.tfm_cutoff, self.config.tfm_order,
                                                 self.config.tfm_strength) if tfm else contextlib.nullcontext())
        with filters:
            embeds = items[input_ids] * self.input_scale
            return self.decoder()(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state

    def user_states(self, input_ids: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, hidden]``: the LM's final hidden state at the newest item of each history."""
        items = self.item_embeddings() if items is None else items
        return self._read_history(input_ids, items, self.config.tfm)[:, -1]

    @torch.no_grad()
    def layer_states(self, input_ids: torch.Tensor, tfm: bool) -> list[torch.Tensor]:
        """``[input embeddings, output of layer 1, ..., of layer N]`` (each ``[B, L, hidden]``), with or
        without TFM whatever the config says: the spectral-attenuation diagnostic compares both."""
        items = self.item_embeddings()
        with recorded_layer_outputs(self.backbone) as outputs:
            self._read_history(input_ids, items, tfm)
        return [items[input_ids] * self.input_scale, *outputs]

    def score_all_items(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, num_items + 1]`` next-item scores; column 0 (padding) is ``-inf``.

        A scaled dot product (``/ sqrt(hidden)``, as in attention): with unit-RMS vectors the logits start
        O(1) and can reach ``sqrt(hidden)``, enough to separate the target from a large catalogue.
        """
        items = self.item_embeddings()
        scores = self.output_projection(self.user_states(input_ids, items)) @ items.T / items.shape[1] ** 0.5
        scores[:, 0] = float("-inf")
        return scores

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.score_all_items(input_ids)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits.float(), labels)
        return out

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything but the frozen LM: what a checkpoint needs besides the backbone's name."""
        return {name: tensor for name, tensor in self.state_dict().items() if not name.startswith("backbone.")}


def next_item_examples(train: datasets.Dataset, max_len: int) -> datasets.Dataset:
    """One ``{"input_ids": history, "labels": next item}`` row per transition of each training sequence,
    the history being the (up to) ``max_len`` items before it: the model is trained at the last position."""
    histories, targets = [], []
    for row, items in enumerate(train["items"]):
        if any(item < 1 for item in items):
            raise ValueError(f"train split, row {row}: item ids must be >= 1 (0 is padding)")
        for t in range(1, len(items)):
            histories.append(items[max(0, t - max_len): t])
            targets.append(items[t])
    if not targets:
        raise ValueError("train split has no user with two or more items: nothing to learn from")
    return datasets.Dataset.from_dict({"input_ids": histories, "labels": targets})


def collate_histories(features: list[dict]) -> dict[str, torch.Tensor]:
    """Left-pads the histories of a batch (newest item in the last column) and stacks the next items."""
    return {"input_ids": left_pad([feature["input_ids"] for feature in features]),
            "labels": torch.tensor([feature["labels"] for feature in features], dtype=torch.long)}


@torch.no_grad()
def energy_diagnostic(model: FreLLM4Rec, sasrec: nn.Module, histories: list[list[int]], graph: sp.spmatrix,
                      fraction: float) -> dict:
    """Layer-wise low graph-frequency energy share (:func:`~llmrec_ft.filters.spectral_energy.
    layerwise_low_frequency_energy`, ``fraction`` of the local spectrum counted as low) over ``histories`` (the
    newest ``max_len`` items of each): the trained model's LM with and without TFM, and SASRec's blocks on the same
    histories -- the paper's reference curve."""
    max_len = model.config.max_len
    ids = left_pad([history[-max_len:] for history in histories])
    on_device = ids.to(model.item_features.device)
    curves = {"frozen LM, no TFM": model.layer_states(on_device, tfm=False),
              "frozen LM + TFM": model.layer_states(on_device, tfm=True)}
    sasrec = sasrec.to(on_device.device).eval()
    with recorded_layer_outputs(sasrec) as blocks:
        sasrec.encode(on_device)
    curves["SASRec"] = [sasrec.item_embeddings(on_device), *blocks]
    energy = {label: layerwise_low_frequency_energy(states, ids, graph, fraction) for label, states in curves.items()}
    return {"fraction": fraction, "num_users": len(histories), "max_len": max_len, "low_frequency_share": energy}


def save_trainable(model: nn.Module, settings: dict, path: str | Path) -> None:
    """The folder a FreLLM4Rec run ships, written atomically: ``trainable.safetensors`` (every weight but the frozen
    LM's, :meth:`FreLLM4Rec.trainable_state_dict`) and ``frellm4rec.json`` (``settings``: the model config and the
    backbone's name, all that is needed to rebuild it)."""
    with atomic_path(Path(path)) as tmp:
        tmp.mkdir()
        save_file({name: tensor.contiguous() for name, tensor in model.trainable_state_dict().items()},
                  str(tmp / "trainable.safetensors"))
        (tmp / "frellm4rec.json").write_text(json.dumps(settings, indent=2) + "\n")
