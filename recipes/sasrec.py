"""Train SASRec (or HSTU) on a prepared dataset, early-stopped on validation NDCG@10; save it and its test metrics.

    python recipes/sasrec.py --config recipes/configs/sasrec_ml100k.yaml [--seed 1 --output_dir ...]
    python recipes/sasrec.py --config recipes/configs/sasrec_ml100k.yaml --model hstu --output_dir runs/hstu_ml100k
    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/sasrec.py --config ...

``output_dir`` ends with ``config.json`` + ``model.safetensors`` (load with ``llmrec_ft.collab.load_id_model``) and
``metrics.json`` (full-ranking valid and test metrics, overall and warm/cold, and the git commit). Either model's
folder is a ``sasrec_checkpoint`` for the LLM recipes: HSTU (:mod:`llmrec_ft.collab.hstu`) has SASRec's
interface, so it serves as the collaborative model and as the ID baseline wherever SASRec does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState
from transformers import set_seed
from trl import TrlParser

from llmrec_ft.collab.hstu import HSTU, HSTUConfig
from llmrec_ft.collab.sasrec import SASRec, SASRecConfig
from llmrec_ft.collab.trainer import (RankingTrainingArguments, final_ranking_metrics, save_pretrained_atomic,
                                      train_id_model)
from llmrec_ft.data import DataConfig, num_items, prepare_dataset
from llmrec_ft.eval.report import format_metrics_table
from llmrec_ft.io import write_json
from llmrec_ft.provenance import git_commit


@dataclass
class SASRecArgs:
    """Model hyperparameters (fields of :class:`SASRecConfig` / :class:`HSTUConfig`; the catalog size comes
    from the data)."""

    model: str = field(default="sasrec", metadata={"help": "sasrec | hstu (HSTU ignores intermediate_size)."})
    hidden_size: int = field(default=64, metadata={"help": "Item/position embedding and Transformer width."})
    num_blocks: int = field(default=2, metadata={"help": "Self-attention blocks."})
    num_heads: int = field(default=1, metadata={"help": "Attention heads per block."})
    intermediate_size: int = field(default=256, metadata={"help": "Feed-forward width."})
    max_len: int = field(default=50, metadata={"help": "Most recent items the model reads."})
    dropout: float = field(default=0.2, metadata={"help": "Dropout on embeddings, attention and feed-forward."})
    loss_type: str = field(default="ce", metadata={"help": "'ce' (full-catalog softmax) or 'bce' (sampled negatives)."})
    num_negatives: int = field(default=1, metadata={"help": "Negatives per position for loss_type='bce'."})


def build_model(args: SASRecArgs, catalog_size: int) -> SASRec | HSTU:
    """A fresh SASRec or HSTU over ``catalog_size`` items. Raises ``ValueError`` for another ``model``, or for
    HSTU with a loss other than ``ce`` (the sampled-BCE loss is SASRec's own)."""
    fields = {key: value for key, value in dataclasses.asdict(args).items() if key != "model"}
    if args.model == "sasrec":
        return SASRec(SASRecConfig(num_items=catalog_size, **fields))
    if args.model != "hstu":
        raise ValueError(f"model={args.model!r}: choose sasrec or hstu")
    if args.loss_type != "ce":
        raise ValueError(f"model=hstu trains with loss_type=ce only, not {args.loss_type!r}")
    return HSTU(HSTUConfig(num_items=catalog_size, hidden_size=args.hidden_size, num_blocks=args.num_blocks,
                           num_heads=args.num_heads, max_len=args.max_len, dropout=args.dropout))


def main(model_args: SASRecArgs, data_args: DataConfig, training_args: RankingTrainingArguments) -> dict:
    with PartialState().main_process_first():  # several processes: the first writes the cache, once
        ds = prepare_dataset(data_args)
    set_seed(training_args.seed)  # before the model exists: Trainer seeds only after its weights are drawn
    model = build_model(model_args, num_items(ds))
    trainer = train_id_model(model, ds, training_args)
    metrics = {**final_ranking_metrics(trainer, ds), "git_commit": git_commit()}
    if trainer.is_world_process_zero():
        output_dir = Path(training_args.output_dir)
        save_pretrained_atomic(trainer.model, output_dir)
        write_json(output_dir / "metrics.json", metrics)
        print(format_metrics_table(metrics, {"metrics": output_dir / "metrics.json", "model": output_dir}))
    return metrics


if __name__ == "__main__":
    main(*TrlParser((SASRecArgs, DataConfig, RankingTrainingArguments)).parse_args_and_config())
