"""An ID backbone (SASRec, GRU4Rec, BERT4Rec, HSTU) with LLM item text fused in through an adapter: its options,
how it is built, its spectrum diagnostic, and how it is saved and rebuilt without the LLM.

``recipes/spectran.py`` trains it; any recipe comparing backbones or adapters on the same harness can reuse it.
The options are checked when :class:`FusedModelArgs` is built (argument parsing), before the item texts are
encoded by the LLM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel

from llmrec_ft.adapters.fusion import ADAPTERS, attach_adapter, build_adapter
from llmrec_ft.adapters.infonce import infonce_config
from llmrec_ft.adapters.spectrum import effective_rank, normalized_spectrum, plot_spectra
from llmrec_ft.collab.bert4rec import BERT4Rec, BERT4RecConfig
from llmrec_ft.collab.gru4rec import GRU4Rec, GRU4RecConfig
from llmrec_ft.collab.hstu import HSTU, HSTUConfig
from llmrec_ft.collab.sasrec import SASRec, SASRecConfig
from llmrec_ft.collab.trainer import save_pretrained_atomic
from llmrec_ft.data import item_texts
from llmrec_ft.io import atomic_path, write_json
from llmrec_ft.llm.text_embeddings import embed_item_texts

BACKBONES = ("sasrec", "gru4rec", "bert4rec", "hstu")
LOSSES = ("ce", "infonce")
TEXT_MAX_LENGTH = 128  # tokens per item text; ML-100K titles + genres use about 20
ADAPTER_CONFIG, TEXT_EMBEDDINGS = "adapter_config.json", "text_embeddings.safetensors"


@dataclass
class FusedModelArgs:
    """Backbone, adapter and text-encoder settings. Field names double as recipe YAML keys."""

    backbone: str = field(default="sasrec", metadata={"help": f"One of {BACKBONES}."})
    adapter: str = field(default="spectran", metadata={"help": "none | linear | mlp | svd | spectran."})
    hidden_size: int = field(default=64, metadata={"help": "Item embedding width (= adapter output size)."})
    max_len: int = field(default=50, metadata={"help": "Most recent items the backbone reads."})
    dropout: float = field(default=0.2, metadata={"help": "Backbone dropout."})
    num_blocks: int = field(default=2, metadata={"help": "SASRec/BERT4Rec: Transformer blocks."})
    num_heads: int = field(default=1, metadata={"help": "SASRec/BERT4Rec: attention heads."})
    intermediate_size: int = field(default=256, metadata={"help": "SASRec/BERT4Rec: feed-forward width."})
    gru_hidden_size: int = field(default=128, metadata={"help": "GRU4Rec: GRU state width."})
    mask_prob: float = field(default=0.2, metadata={"help": "BERT4Rec: probability of masking an item."})
    loss: str = field(default="ce", metadata={"help": "ce (full catalogue) | infonce (sampled softmax, SpecTran)."})
    infonce_negatives: int = field(default=256, metadata={"help": "InfoNCE: uniform negatives per position."})
    infonce_temperature: float = field(default=0.1, metadata={"help": "InfoNCE: softmax temperature."})
    text_encoder: str = field(default="smollm2-135m-instruct", metadata={
        "help": "all-minilm-l6-v2 (sentence encoder) or a causal LM: embedded name, Hub id or dir."})
    text_pooling: str = field(default="mean", metadata={
        "help": "Causal LM: 'mean' or 'last' token of the item text (a sentence encoder is always mean-pooled)."})
    text_layer: int = field(default=-1, metadata={"help": "Hidden layer of a causal LM to pool (-1 = last)."})
    text_batch_size: int = field(default=32, metadata={"help": "Item texts per encoder forward pass."})
    mlp_hidden_size: int = field(default=256, metadata={"help": "MLP adapter hidden width."})
    mlp_dropout: float = field(default=0.1, metadata={"help": "Dropout between the MLP adapter's layers."})
    spectran_dropout: float = field(default=0.0, metadata={
        "help": "Dropout in SpecTran's spectrum transformer (it perturbs all items at once; 0 recommended)."})
    spectran_model_dim: int = field(default=64, metadata={"help": "SpecTran: width of the component tokens."})
    spectran_layers: int = field(default=1, metadata={"help": "SpecTran: Transformer layers over the spectrum."})
    spectran_heads: int = field(default=2, metadata={"help": "SpecTran: attention heads."})
    spectran_shrink: float = field(default=0.5, metadata={"help": "SpecTran: initial (learned) Softshrink lambda of the attention."})

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone={self.backbone!r}: choose one of {BACKBONES}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r}: choose one of {LOSSES}")
        if self.adapter != "none" and self.adapter not in ADAPTERS:
            raise ValueError(f"unknown adapter {self.adapter!r}; choose one of {sorted(ADAPTERS)} (or 'none' for "
                             "ID-only)")

    def adapter_kwargs(self) -> dict:
        """Constructor arguments of the chosen adapter (saved to ``adapter_config.json``)."""
        if self.adapter == "mlp":
            return {"hidden_dim": self.mlp_hidden_size, "dropout": self.mlp_dropout}
        if self.adapter == "spectran":
            return {"model_dim": self.spectran_model_dim, "num_layers": self.spectran_layers,
                    "num_heads": self.spectran_heads, "dropout": self.spectran_dropout, "shrink": self.spectran_shrink}
        return {}


def build_id_backbone(args: FusedModelArgs, catalog_size: int) -> nn.Module:
    """A fresh ``args.backbone`` over ``catalog_size`` items, trained with ``args.loss``."""
    common = dict(num_items=catalog_size, hidden_size=args.hidden_size, max_len=args.max_len, dropout=args.dropout,
                  **(infonce_config(args.infonce_negatives, args.infonce_temperature) if args.loss == "infonce" else {}))
    transformer = dict(num_blocks=args.num_blocks, num_heads=args.num_heads, intermediate_size=args.intermediate_size)
    if args.backbone == "sasrec":
        return SASRec(SASRecConfig(**common, **transformer))
    if args.backbone == "gru4rec":
        return GRU4Rec(GRU4RecConfig(**common, gru_hidden_size=args.gru_hidden_size))
    if args.backbone == "bert4rec":
        return BERT4Rec(BERT4RecConfig(**common, **transformer, mask_prob=args.mask_prob))
    return HSTU(HSTUConfig(**common, num_blocks=args.num_blocks, num_heads=args.num_heads))


def item_text_matrix(ds: datasets.DatasetDict, args: FusedModelArgs) -> torch.Tensor:
    """``[num_items, D]`` embedding of each item's text by ``args.text_encoder`` (cached on disk); row ``i`` is
    item id ``i + 1``."""
    return embed_item_texts(item_texts(ds), args.text_encoder, pooling=args.text_pooling, layer=args.text_layer,
                            batch_size=args.text_batch_size, max_length=TEXT_MAX_LENGTH)


def build_fused_model(args: FusedModelArgs, catalog_size: int, text: torch.Tensor | None) -> nn.Module:
    """The backbone with ``args.adapter`` over ``text`` (``[catalog_size, D]``) fused into its item embeddings."""
    model = build_id_backbone(args, catalog_size)
    if args.adapter != "none":
        attach_adapter(model, build_adapter(args.adapter, text, args.hidden_size, **args.adapter_kwargs()))
    return model


@torch.no_grad()
def item_spectra(model: nn.Module) -> dict:
    """Normalized singular values (and effective rank) of the adapted text table and of the whole item table:
    the dimension-collapse check of SpecTran."""
    was_training = model.training
    model.eval()
    embeddings = model.item_embeddings
    rows = torch.arange(1, model.config.num_items + 1, device=model.device)
    out = {"item_table": normalized_spectrum(embeddings(rows))}
    if hasattr(embeddings, "adapter"):
        out["adapted"] = normalized_spectrum(embeddings.adapter())
    model.train(was_training)
    return {name: {"normalized_singular_values": values.tolist(), "effective_rank": effective_rank(values)}
            for name, values in out.items()}


def save_fused_model(model: nn.Module, args: FusedModelArgs, text: torch.Tensor | None, spectra: dict,
                     output_dir: Path) -> None:
    """``config.json`` + ``model.safetensors``, ``adapter_config.json`` + ``text_embeddings.safetensors`` (what
    :func:`load_fused_model` needs, without the LLM), ``spectrum.json`` and ``spectrum.png``, each written
    atomically."""
    save_pretrained_atomic(model, output_dir)
    write_json(output_dir / ADAPTER_CONFIG, {"adapter": args.adapter, "kwargs": args.adapter_kwargs(),
                                             "text_encoder": args.text_encoder, "text_pooling": args.text_pooling,
                                             "text_layer": args.text_layer})
    if text is not None:
        with atomic_path(output_dir / TEXT_EMBEDDINGS) as tmp:
            save_file({"embeddings": text.contiguous()}, str(tmp))
    write_json(output_dir / "spectrum.json", spectra)
    lines = {name: values["normalized_singular_values"] for name, values in spectra.items()}
    plot_spectra({f"{args.backbone} + {args.adapter}": lines}, output_dir / "spectrum.png")


def load_fused_model(output_dir: str | Path) -> nn.Module:
    """Rebuild a model saved by :func:`save_fused_model` (backbone + adapter + weights), in eval mode, without
    loading the LLM."""
    output_dir = Path(output_dir)
    model = AutoModel.from_config(AutoConfig.from_pretrained(output_dir))
    adapter = json.loads((output_dir / ADAPTER_CONFIG).read_text())
    if adapter["adapter"] != "none":
        text = load_file(output_dir / TEXT_EMBEDDINGS)["embeddings"]
        attach_adapter(model, build_adapter(adapter["adapter"], text, model.config.hidden_size, **adapter["kwargs"]))
    model.load_state_dict(load_file(output_dir / "model.safetensors"))
    return model.eval()
