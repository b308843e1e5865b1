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
``<split>_sampled`` the authors' metric, the target among ``num_negatives`` uniform items; the SASRec it builds
on under both, ``sasrec_test`` / ``sasrec_test_sampled``, on the same negatives; plus timings and the git commit),
``sasrec/`` (when trained here, with its test metrics),
``model/`` (``trainable.safetensors``: the trainable modules and item features; ``frellm4rec.json``: the model
config and the backbone's name) and, with ``energy_users > 0``, ``energy.json`` + ``energy.png``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import Trainer, TrainingArguments, set_seed
from trl import TrlParser

from llmrec_ft.collab.trainer import load_or_train_sasrec
from llmrec_ft.data import DataConfig, item_texts, num_items, prepare_dataset
from llmrec_ft.eval.report import format_metrics_table
from llmrec_ft.filters.frellm4rec import FreLLM4RecConfig, energy_diagnostic, save_trainable
from llmrec_ft.filters.frellm4rec_authors import build_frellm4rec, frellm4rec_training_data, rank_full_and_sampled
from llmrec_ft.filters.graph import cooccurrence_graph
from llmrec_ft.filters.spectral_energy import plot_layerwise_energy
from llmrec_ft.io import write_json
from llmrec_ft.llm.backbone import check_backbone_options, load_backbone
from llmrec_ft.llm.text_embeddings import embed_item_texts, item_text_embeddings
from llmrec_ft.provenance import git_commit


@dataclass
class FreLLM4RecArgs(FreLLM4RecConfig):
    """The model config plus where its inputs come from and what to evaluate."""

    backbone: str = field(default="smollm2-135m-instruct", metadata={"help": "Hub id, local dir or embedded name."})
    sasrec_checkpoint: str | None = field(default=None, metadata={
        "help": "SASRec dir (recipes/sasrec.py output). None: train one into <output_dir>/sasrec first (or reuse "
                "the one an earlier run trained there)."})
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

    def __post_init__(self):
        super().__post_init__()
        check_backbone_options(self.backbone, name_field="backbone")  # now, not after SASRec's training


def main(args: FreLLM4RecArgs, data_args: DataConfig, training_args: TrainingArguments) -> dict:
    if args.protocol == "authors" and args.energy_users > 0:
        raise ValueError("energy_users > 0: the energy diagnostic runs under protocol ours only; set --energy_users 0")
    timings, start = {}, time.perf_counter()
    output_dir = Path(training_args.output_dir)
    with PartialState().main_process_first():  # several processes: the first writes the cache, once
        ds = prepare_dataset(data_args)
    if args.num_negatives >= num_items(ds):
        raise ValueError(f"num_negatives={args.num_negatives} needs more items than that; the data has {num_items(ds)}")
    sasrec, sasrec_path = load_or_train_sasrec(ds, args.sasrec_checkpoint, output_dir, training_args.seed,
                                               args.sasrec_epochs)
    # the ID baseline under both protocols, with the negatives FreLLM4Rec's sampled metric draws (same seed, batches)
    sasrec_both = rank_full_and_sampled(sasrec, ds["test"], args.num_negatives,
                                        batch_size=args.eval_batch_size, seed=training_args.seed)
    if not args.sasrec_checkpoint:  # trained here: its test metrics go next to it too
        write_json(sasrec_path / "metrics.json", {"test": sasrec_both["full"]})
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
               "git_commit": git_commit(), "sasrec_test": sasrec_both["full"],
               "sasrec_test_sampled": sasrec_both["sampled"]}
    for split in args.eval_splits:
        tick = time.perf_counter()
        both = rank_full_and_sampled(model, ds[split], args.num_negatives, batch_size=args.eval_batch_size,
                                     seed=training_args.seed)
        metrics[split], metrics[f"{split}_sampled"] = both["full"], both["sampled"]
        timings[f"eval_{split}_s"] = time.perf_counter() - tick
    if args.energy_users > 0:
        energy = energy_diagnostic(model, sasrec, ds["test"]["history"][: args.energy_users], graph,
                                   args.energy_fraction)
        write_json(output_dir / "energy.json", energy)
        plot_layerwise_energy(energy["low_frequency_share"], output_dir / "energy.png", args.energy_fraction)
    save_trainable(model, dataclasses.asdict(args), output_dir / "model")
    metrics["timings"] = {name: round(value, 1) for name, value in timings.items()}
    write_json(output_dir / "metrics.json", metrics)
    print(format_metrics_table({k: v for k, v in metrics.items() if k != "config"},  # config: in model/
                               {"metrics": output_dir / "metrics.json", "model": output_dir / "model"}))
    return metrics


if __name__ == "__main__":
    main(*TrlParser((FreLLM4RecArgs, DataConfig, TrainingArguments)).parse_args_and_config())
