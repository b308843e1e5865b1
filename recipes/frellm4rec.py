"""FreLLM4Rec: a frozen LM + fusion MLP over SASRec ID and LM text embeddings, with G-LPF and TFM filters.

    python recipes/frellm4rec.py --config recipes/configs/frellm4rec_ml100k.yaml [--glpf false --tfm false ...]
    python recipes/frellm4rec.py --config recipes/configs/frellm4rec_ml100k.yaml --protocol authors \
        --tfm_leak false --energy_users 0   # the authors' model, loss and metric, without their TFM leak

Steps: prepare the data; load (``--sasrec_checkpoint``) or train a SASRec for the ID embeddings; load the
frozen backbone and embed every item's text with it (cached on disk); build the co-occurrence graph of
the training sequences; train the fusion MLP + output projection with ``transformers.Trainer``; rank the
full catalogue for the valid/test users; optionally run the layer-wise spectral-energy diagnostic.

``protocol: authors`` swaps in :class:`~llmrec_ft.filters.frellm4rec_authors.FreLLM4RecAuthors` (per-position
sampled softmax, gated fusion, last-token text; ``tfm_leak`` keeps or removes their TFM leak).

``output_dir`` ends with ``metrics.json`` (per split: full-ranking metrics, overall and warm/cold, and under
``<split>_sampled`` the authors' metric, the target among ``num_negatives`` uniform items; plus timings),
``model/`` (``trainable.safetensors``: the trainable modules and item features; ``frellm4rec.json``: the model
config and the backbone's name) and, with ``energy_users > 0``, ``energy.json`` + ``energy.png``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from safetensors.torch import save_file
from transformers import Trainer, TrainingArguments, set_seed
from trl import TrlParser

from llmrec_ft.collab.sasrec import SASRec, SASRecConfig
from llmrec_ft.collab.sequences import left_pad
from llmrec_ft.collab.trainer import RankingTrainingArguments, evaluate_ranking, save_pretrained_atomic, train_id_model
from llmrec_ft.data import DataConfig, num_items, prepare_dataset
from llmrec_ft.eval.report import format_metrics_table
from llmrec_ft.filters.frellm4rec import FreLLM4Rec, FreLLM4RecConfig
from llmrec_ft.filters.frellm4rec_authors import build_frellm4rec, frellm4rec_training_data, rank_full_and_sampled
from llmrec_ft.filters.graph import cooccurrence_graph
from llmrec_ft.filters.spectral_energy import (layerwise_low_frequency_energy, plot_layerwise_energy,
                                               recorded_layer_outputs)
from llmrec_ft.io import atomic_path, write_json
from llmrec_ft.llm.backbone import load_backbone
from llmrec_ft.llm.text_embeddings import embed_item_texts, item_text_embeddings


@dataclass
class FreLLM4RecArgs(FreLLM4RecConfig):
    """The model config plus where its inputs come from and what to evaluate."""

    backbone: str = field(default="smollm2-135m-instruct", metadata={"help": "Hub id, local dir or embedded name."})
    sasrec_checkpoint: str | None = field(default=None, metadata={
        "help": "SASRec dir (recipes/sasrec.py output). None: train one into <output_dir>/sasrec first."})
    sasrec_epochs: int = field(default=200, metadata={"help": "Epoch cap when training SASRec here (early-stopped)."})
    text_encoder: str | None = field(default=None, metadata={
        "help": "Item-text encoder: None = the backbone itself (the paper), all-minilm-l6-v2, or any causal LM."})
    text_pooling: str | None = field(default=None, metadata={
        "help": "Causal LM: 'mean' or 'last' token of the item text (a sentence encoder is always mean-pooled). "
                "None: 'mean' for protocol ours, 'last' for authors (their main.py)."})
    text_batch_size: int = field(default=16, metadata={"help": "Items per batch when embedding the texts."})
    eval_splits: list[str] = field(default_factory=lambda: ["valid", "test"], metadata={"help": "Splits to rank."})
    eval_batch_size: int = field(default=64, metadata={"help": "Users per ranking batch."})
    energy_users: int = field(default=128, metadata={
        "help": "Test users for the energy diagnostic (0: skip it; protocol ours only)."})
    energy_fraction: float = field(default=0.25, metadata={"help": "Share of the local spectrum counted as low."})


def load_or_train_sasrec(args: FreLLM4RecArgs, ds, training_args: TrainingArguments) -> tuple[SASRec, dict | None]:
    """The SASRec that provides the ID embeddings, and its test metrics when trained here."""
    if args.sasrec_checkpoint:
        model = SASRec.from_pretrained(args.sasrec_checkpoint)
        if model.config.num_items != num_items(ds):
            raise ValueError(f"{args.sasrec_checkpoint}: SASRec has {model.config.num_items} items, "
                             f"the data has {num_items(ds)}")
        return model.eval(), None
    output_dir = Path(training_args.output_dir) / "sasrec"
    sasrec_args = RankingTrainingArguments(output_dir=str(output_dir / "checkpoints"), seed=training_args.seed,
                                           num_train_epochs=args.sasrec_epochs, report_to=[], disable_tqdm=True)
    trainer = train_id_model(SASRec(SASRecConfig(num_items=num_items(ds))), ds, sasrec_args)
    save_pretrained_atomic(trainer.model, output_dir)
    metrics = evaluate_ranking(trainer.model, ds, "test", seed=training_args.seed)
    write_json(output_dir / "metrics.json", {"test": metrics})
    return trainer.model.eval(), metrics


def item_texts(ds) -> list[str]:
    items = ds["items"]
    if items["item_id"] != list(range(1, len(items) + 1)):
        raise ValueError("items split: item_id must be 1..num_items in order")
    return items["text"]


@torch.no_grad()
def energy_diagnostic(model: FreLLM4Rec, sasrec: SASRec, ds, graph, args: FreLLM4RecArgs) -> dict:
    """Layer-wise low graph-frequency energy share for ``energy_users`` test users: the trained model's LM
    with and without TFM, and SASRec's blocks on the same histories (the paper's reference)."""
    histories = ds["test"]["history"][: args.energy_users]
    ids = left_pad([history[-args.max_len:] for history in histories])
    on_device = ids.to(model.item_features.device)
    curves = {"frozen LM, no TFM": model.layer_states(on_device, tfm=False),
              "frozen LM + TFM": model.layer_states(on_device, tfm=True)}
    sasrec = sasrec.to(on_device.device).eval()
    with recorded_layer_outputs(sasrec) as blocks:
        sasrec.encode(on_device)
    curves["SASRec"] = [sasrec.item_embeddings(on_device), *blocks]
    energy = {label: layerwise_low_frequency_energy(states, ids, graph, args.energy_fraction)
              for label, states in curves.items()}
    return {"fraction": args.energy_fraction, "num_users": len(histories), "max_len": args.max_len,
            "low_frequency_share": energy}


def save_model(model: FreLLM4Rec, args: FreLLM4RecArgs, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.mkdir()
        save_file({name: tensor.contiguous() for name, tensor in model.trainable_state_dict().items()},
                  str(tmp / "trainable.safetensors"))
        (tmp / "frellm4rec.json").write_text(json.dumps(dataclasses.asdict(args), indent=2) + "\n")


def main(args: FreLLM4RecArgs, data_args: DataConfig, training_args: TrainingArguments) -> dict:
    if args.protocol == "authors" and args.energy_users > 0:
        raise ValueError("energy_users > 0: the energy diagnostic runs under protocol ours only; set --energy_users 0")
    timings, start = {}, time.perf_counter()
    output_dir = Path(training_args.output_dir)
    with PartialState().main_process_first():  # several processes: the first writes the cache, once
        ds = prepare_dataset(data_args)
    if args.num_negatives >= num_items(ds):
        raise ValueError(f"num_negatives={args.num_negatives} needs more items than that; the data has {num_items(ds)}")
    sasrec, sasrec_metrics = load_or_train_sasrec(args, ds, training_args)
    timings["sasrec_s"] = time.perf_counter() - start

    backbone, tokenizer = load_backbone(args.backbone)
    backbone.to(training_args.device)  # embed the item texts where training will run
    pooling = args.text_pooling or ("last" if args.protocol == "authors" else "mean")
    if args.text_encoder is None:
        text = item_text_embeddings(backbone, tokenizer, item_texts(ds), args.backbone,
                                    batch_size=args.text_batch_size, pooling=pooling)
    else:
        text = embed_item_texts(item_texts(ds), args.text_encoder, pooling=pooling,
                                batch_size=args.text_batch_size, device=training_args.device)
    text = torch.cat([text.new_zeros(1, text.shape[1]), text])  # row 0 = padding
    graph = cooccurrence_graph(ds["train"]["items"], num_items(ds))
    config = FreLLM4RecConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FreLLM4RecConfig)})
    set_seed(training_args.seed)  # the same initial weights whether SASRec was just trained here or loaded
    model = build_frellm4rec(backbone, sasrec.item_embeddings.weight.detach(), text, config, graph)
    timings["setup_s"] = time.perf_counter() - start - timings["sasrec_s"]

    tick = time.perf_counter()
    train_dataset, collator = frellm4rec_training_data(ds["train"], config, num_items(ds), training_args.seed)
    trainer = Trainer(model=model, args=training_args, train_dataset=train_dataset, data_collator=collator)
    trainer.train()
    timings["train_s"] = time.perf_counter() - tick

    metrics = {"config": dataclasses.asdict(args), "seed": training_args.seed, "max_steps": training_args.max_steps,
               "sasrec_test": sasrec_metrics}
    for split in args.eval_splits:
        tick = time.perf_counter()
        both = rank_full_and_sampled(model, ds[split], args.num_negatives, batch_size=args.eval_batch_size,
                                     seed=training_args.seed)
        metrics[split], metrics[f"{split}_sampled"] = both["full"], both["sampled"]
        timings[f"eval_{split}_s"] = time.perf_counter() - tick
    if args.energy_users > 0:
        energy = energy_diagnostic(model, sasrec, ds, graph, args)
        write_json(output_dir / "energy.json", energy)
        plot_layerwise_energy(energy["low_frequency_share"], output_dir / "energy.png", args.energy_fraction)
    save_model(model, args, output_dir / "model")
    metrics["timings"] = {name: round(value, 1) for name, value in timings.items()}
    write_json(output_dir / "metrics.json", metrics)
    print(format_metrics_table({k: v for k, v in metrics.items() if k != "config"},  # config: in model/
                               {"metrics": output_dir / "metrics.json", "model": output_dir / "model"}))
    return metrics


if __name__ == "__main__":
    main(*TrlParser((FreLLM4RecArgs, DataConfig, TrainingArguments)).parse_args_and_config())
