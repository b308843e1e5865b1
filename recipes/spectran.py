"""Train an ID backbone (SASRec, GRU4Rec, BERT4Rec, HSTU) with LLM item text fused in through an adapter.

    python recipes/spectran.py --config recipes/configs/spectran_ml100k.yaml [--backbone gru4rec --adapter mlp]
    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/spectran.py --config ...

``adapter``: ``none`` (ID-only), ``linear``/``mlp`` (learned projection), ``svd`` (frozen top-k principal
coordinates) or ``spectran`` (spectral-aware transformer adapter, :mod:`llmrec_ft.adapters.spectran`).
``loss``: ``ce`` (full-catalogue cross-entropy) or ``infonce`` (sampled softmax with a temperature, what
SpecTran trains with; :mod:`llmrec_ft.adapters.infonce`).
Item texts (``ds["items"]["text"]``) are encoded once by ``text_encoder`` (the embedded SmolLM2 by default,
any causal LM, or the ``all-minilm-l6-v2`` sentence encoder) and cached on disk, keyed by the name and the texts.

``output_dir`` ends with ``config.json`` + ``model.safetensors`` (the fused model's weights),
``adapter_config.json`` + ``text_embeddings.safetensors`` (what :func:`load_trained` needs to rebuild it
without the LLM), ``metrics.json`` (valid/test full ranking, overall and warm/cold) and ``spectrum.json`` /
``spectrum.png`` (normalized singular values of the adapted text embeddings: the dimension-collapse check).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, set_seed
from trl import TrlParser

from llmrec_ft.adapters import attach_adapter, build_adapter, effective_rank, normalized_spectrum, plot_spectra
from llmrec_ft.adapters.infonce import infonce_config
from llmrec_ft.collab.bert4rec import BERT4Rec, BERT4RecConfig, MaskedItemCollator, masked_item_windows
from llmrec_ft.collab.gru4rec import GRU4Rec, GRU4RecConfig
from llmrec_ft.collab.hstu import HSTU, HSTUConfig
from llmrec_ft.collab.sasrec import SASRec, SASRecConfig
from llmrec_ft.collab.trainer import RankingTrainingArguments, evaluate_ranking, save_pretrained_atomic, train_id_model
from llmrec_ft.data import DataConfig, num_items, prepare_dataset
from llmrec_ft.eval.report import format_metrics_table
from llmrec_ft.io import atomic_path, write_json
from llmrec_ft.llm.text_embeddings import embed_item_texts

BACKBONES = ("sasrec", "gru4rec", "bert4rec", "hstu")
TEXT_MAX_LENGTH = 128  # tokens per item text; ML-100K titles + genres use about 20


@dataclass
class SpecTranArgs:
    """Backbone, adapter and text-encoder settings."""

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


def build_backbone(args: SpecTranArgs, catalog_size: int):
    if args.loss not in ("ce", "infonce"):
        raise ValueError(f"loss={args.loss!r}: choose ce or infonce")
    common = dict(num_items=catalog_size, hidden_size=args.hidden_size, max_len=args.max_len, dropout=args.dropout,
                  **(infonce_config(args.infonce_negatives, args.infonce_temperature) if args.loss == "infonce" else {}))
    transformer = dict(num_blocks=args.num_blocks, num_heads=args.num_heads, intermediate_size=args.intermediate_size)
    if args.backbone == "sasrec":
        return SASRec(SASRecConfig(**common, **transformer))
    if args.backbone == "gru4rec":
        return GRU4Rec(GRU4RecConfig(**common, gru_hidden_size=args.gru_hidden_size))
    if args.backbone == "bert4rec":
        return BERT4Rec(BERT4RecConfig(**common, **transformer, mask_prob=args.mask_prob))
    if args.backbone == "hstu":
        return HSTU(HSTUConfig(**common, num_blocks=args.num_blocks, num_heads=args.num_heads))
    raise ValueError(f"backbone={args.backbone!r}: choose one of {BACKBONES}")


def adapter_kwargs(args: SpecTranArgs) -> dict:
    """Constructor arguments of the chosen adapter (saved to ``adapter_config.json``)."""
    if args.adapter == "mlp":
        return {"hidden_dim": args.mlp_hidden_size, "dropout": args.mlp_dropout}
    if args.adapter == "spectran":
        return {"model_dim": args.spectran_model_dim, "num_layers": args.spectran_layers,
                "num_heads": args.spectran_heads, "dropout": args.spectran_dropout, "shrink": args.spectran_shrink}
    return {}


def item_text_matrix(ds, args: SpecTranArgs) -> torch.Tensor:
    """``[num_items, D]`` LLM embedding of each item's text; row ``i`` is item id ``i + 1``."""
    items = ds["items"]
    ids = items["item_id"]
    if ids != list(range(1, len(ids) + 1)):
        raise ValueError("items split: item_id must be 1..num_items in order")
    empty = [row for row, text in enumerate(items["text"]) if not text or not text.strip()]
    if empty:
        raise ValueError(f"items split: row {empty[0]} (item_id {ids[empty[0]]}) has an empty text")
    return embed_item_texts(items["text"], args.text_encoder, pooling=args.text_pooling, layer=args.text_layer,
                            batch_size=args.text_batch_size, max_length=TEXT_MAX_LENGTH)


def build_model(args: SpecTranArgs, catalog_size: int, text: torch.Tensor | None):
    model = build_backbone(args, catalog_size)
    if args.adapter != "none":
        attach_adapter(model, build_adapter(args.adapter, text, args.hidden_size, **adapter_kwargs(args)))
    return model


@torch.no_grad()
def spectra(model) -> dict:
    """Normalized singular values (and effective rank) of the adapted text table and of the whole item table."""
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


def main(model_args: SpecTranArgs, data_args: DataConfig, training_args: RankingTrainingArguments) -> dict:
    with PartialState().main_process_first():  # several processes: the first writes the cache, once
        ds = prepare_dataset(data_args)
    text = None if model_args.adapter == "none" else item_text_matrix(ds, model_args)
    set_seed(training_args.seed)  # the model is built before Trainer seeds anything
    model = build_model(model_args, num_items(ds), text)
    if model_args.backbone == "bert4rec":
        trainer = train_id_model(model, ds, training_args,
                                 train_dataset=masked_item_windows(ds["train"], model_args.max_len),
                                 data_collator=MaskedItemCollator(model.config.mask_token_id, model_args.mask_prob))
    else:
        trainer = train_id_model(model, ds, training_args)
    eval_kwargs = {"ks": training_args.eval_ks, "batch_size": training_args.per_device_eval_batch_size,
                   "num_negatives": training_args.eval_num_negatives, "seed": training_args.seed}
    metrics = {split: evaluate_ranking(trainer.model, ds, split, **eval_kwargs) for split in ("valid", "test")}
    metrics["best_checkpoint"] = trainer.state.best_model_checkpoint
    metrics["epochs_trained"] = trainer.state.epoch
    metrics["spectrum"] = spectra(trainer.model)
    if trainer.is_world_process_zero():
        save_trained(trainer.model, model_args, text, metrics, Path(training_args.output_dir))
        output_dir = Path(training_args.output_dir)
        print(format_metrics_table(metrics, {"metrics": output_dir / "metrics.json", "model": output_dir,
                                             "spectrum plot": output_dir / "spectrum.png"}))
    return metrics


def save_trained(model, args: SpecTranArgs, text: torch.Tensor | None, metrics: dict, output_dir: Path) -> None:
    save_pretrained_atomic(model, output_dir)
    write_json(output_dir / "adapter_config.json", {"adapter": args.adapter, "kwargs": adapter_kwargs(args),
                                                    "text_encoder": args.text_encoder,
                                                    "text_pooling": args.text_pooling,
                                                    "text_layer": args.text_layer})
    if text is not None:
        with atomic_path(output_dir / "text_embeddings.safetensors") as tmp:
            save_file({"embeddings": text.contiguous()}, str(tmp))
    write_json(output_dir / "metrics.json", metrics)
    write_json(output_dir / "spectrum.json", metrics["spectrum"])
    lines = {name: values["normalized_singular_values"] for name, values in metrics["spectrum"].items()}
    plot_spectra({f"{args.backbone} + {args.adapter}": lines}, output_dir / "spectrum.png")


def load_trained(output_dir: str | Path):
    """Rebuild a model saved by this recipe (backbone + adapter + weights) without loading the LLM."""
    output_dir = Path(output_dir)
    model = AutoModel.from_config(AutoConfig.from_pretrained(output_dir))
    adapter = json.loads((output_dir / "adapter_config.json").read_text())
    if adapter["adapter"] != "none":
        text = load_file(output_dir / "text_embeddings.safetensors")["embeddings"]
        attach_adapter(model, build_adapter(adapter["adapter"], text, model.config.hidden_size, **adapter["kwargs"]))
    model.load_state_dict(load_file(output_dir / "model.safetensors"))
    return model.eval()


if __name__ == "__main__":
    main(*TrlParser((SpecTranArgs, DataConfig, RankingTrainingArguments)).parse_args_and_config())
