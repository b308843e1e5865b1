"""Train SASRec on a prepared dataset, early-stopped on validation NDCG@10; save it and its test metrics.

    python recipes/sasrec.py --config recipes/configs/sasrec_ml100k.yaml [--seed 1 --output_dir ...]
    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/sasrec.py --config ...

``output_dir`` ends with ``config.json`` + ``model.safetensors`` (load with ``SASRec.from_pretrained``) and
``metrics.json`` (full-ranking valid and test metrics, overall and warm/cold, and the git commit).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState
from transformers import set_seed
from trl import TrlParser

from llmrec_ft.collab.sasrec import SASRec, SASRecConfig
from llmrec_ft.collab.trainer import (RankingTrainingArguments, final_ranking_metrics, save_pretrained_atomic,
                                      train_id_model)
from llmrec_ft.data import DataConfig, num_items, prepare_dataset
from llmrec_ft.eval.report import format_metrics_table
from llmrec_ft.io import write_json
from llmrec_ft.provenance import git_commit


@dataclass
class SASRecArgs:
    """Model hyperparameters (fields of :class:`SASRecConfig`; the catalog size comes from the data)."""

    hidden_size: int = field(default=64, metadata={"help": "Item/position embedding and Transformer width."})
    num_blocks: int = field(default=2, metadata={"help": "Self-attention blocks."})
    num_heads: int = field(default=1, metadata={"help": "Attention heads per block."})
    intermediate_size: int = field(default=256, metadata={"help": "Feed-forward width."})
    max_len: int = field(default=50, metadata={"help": "Most recent items the model reads."})
    dropout: float = field(default=0.2, metadata={"help": "Dropout on embeddings, attention and feed-forward."})
    loss_type: str = field(default="ce", metadata={"help": "'ce' (full-catalog softmax) or 'bce' (sampled negatives)."})
    num_negatives: int = field(default=1, metadata={"help": "Negatives per position for loss_type='bce'."})


def main(model_args: SASRecArgs, data_args: DataConfig, training_args: RankingTrainingArguments) -> dict:
    with PartialState().main_process_first():  # several processes: the first writes the cache, once
        ds = prepare_dataset(data_args)
    set_seed(training_args.seed)  # before the model exists: Trainer seeds only after its weights are drawn
    model = SASRec(SASRecConfig(num_items=num_items(ds), **dataclasses.asdict(model_args)))
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
