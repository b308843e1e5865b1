"""Train any ID backbone (SASRec; GRU4Rec, BERT4Rec, ...) with ``transformers.Trainer``, early-stopped on
full-ranking NDCG@10 of the validation split, as RecBole does.

A backbone is a ``PreTrainedModel`` with ``config.max_len``, ``forward(input_ids, labels) -> .loss`` and
``score_all_items(input_ids) -> [B, num_items + 1]`` (``input_ids`` left-padded, at most ``max_len``).

Trainer brings Accelerate (CPU, multi-GPU, bf16), checkpoints, resume, schedulers and logging. We only
replace :meth:`RankingTrainer.evaluate`: Trainer's own loop would gather a ``[users, items]`` logit matrix
and cannot mask each user's history, so we rank the catalog ourselves and log ``eval_ndcg@10`` etc.;
``metric_for_best_model``, ``load_best_model_at_end`` and ``EarlyStoppingCallback`` then work unchanged.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from accelerate import PartialState
from transformers import EarlyStoppingCallback, PreTrainedModel, Trainer, TrainerCallback, TrainingArguments, set_seed

from llmrec_ft.collab import SequentialRecommender, load_id_model
from llmrec_ft.collab.sasrec import SASRec, SASRecConfig
from llmrec_ft.collab.sequences import NextItemCollator, ranking_batches, training_windows
from llmrec_ft.data import num_items
from llmrec_ft.eval import RankingAccumulator, flatten_report


@dataclass
class RankingTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with RecBole-style defaults for ID models: Adam at 1e-3 without decay, evaluate
    and checkpoint every epoch, keep the best valid NDCG@10, stop after ``early_stopping_patience`` epochs
    without improvement (200 epochs at most)."""

    early_stopping_patience: int | None = field(default=10, metadata={
        "help": "Stop after this many evaluations without a better metric_for_best_model (None: never)."})
    eval_ks: list[int] = field(default_factory=lambda: [10, 20], metadata={"help": "K of HR/NDCG/MRR@K."})
    eval_num_negatives: int | None = field(default=None, metadata={
        "help": "None: rank the full catalog (default). An int: rank the target among that many sampled items."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Adam(W) learning rate."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "RecBole keeps the rate constant."})
    num_train_epochs: float = field(default=200.0, metadata={"help": "Upper bound; early stopping ends sooner."})
    per_device_train_batch_size: int = field(default=128, metadata={"help": "Training windows per batch."})
    per_device_eval_batch_size: int = field(default=512, metadata={"help": "Users ranked per batch."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When to rank the validation split."})
    save_strategy: str = field(default="epoch", metadata={"help": "Must match eval_strategy to keep the best."})
    logging_strategy: str = field(default="epoch", metadata={"help": "Log the training loss every epoch."})
    save_total_limit: int | None = field(default=1, metadata={"help": "Checkpoints kept besides the best."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "End with the best-validation weights."})
    metric_for_best_model: str | None = field(default="ndcg@10", metadata={"help": "Validation metric to select on."})
    greater_is_better: bool | None = field(default=True, metadata={"help": "Higher ranking metrics are better."})


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def rank_examples(model: PreTrainedModel, examples: datasets.Dataset, ks=(10, 20), batch_size: int = 512,
                  num_negatives: int | None = None, seed: int = 0) -> dict[str, dict[str, float]]:
    """Rank every row of a valid/test split (``history``, ``target``, optional ``target_is_cold``).

    Returns ``{"all": {...}, "warm": {...}, "cold": {...}}`` (warm/cold where the split marks cold targets).
    """
    was_training = model.training
    model.eval()
    accumulator = RankingAccumulator(ks, num_negatives=num_negatives, seed=seed)
    device = _device(model)
    try:
        for batch in ranking_batches(examples, model.config.max_len, batch_size):
            scores = model.score_all_items(batch["input_ids"].to(device)).float()
            accumulator.add(scores, batch["targets"].to(device), batch["history"].to(device), batch["cold"])
    finally:
        model.train(was_training)
    return accumulator.compute()


def evaluate_ranking(model: PreTrainedModel, ds: datasets.DatasetDict, split: str = "test", **kwargs) -> dict:
    """:func:`rank_examples` on ``ds[split]`` (``valid`` or ``test``); kwargs: ks, batch_size, num_negatives, seed."""
    return rank_examples(model, ds[split], **kwargs)


class RankingTrainer(Trainer):
    """A ``Trainer`` whose evaluation is full-catalog ranking of ``eval_dataset`` (a valid/test split)."""

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        start = time.perf_counter()
        report = rank_examples(self.model, eval_dataset if eval_dataset is not None else self.eval_dataset,
                               ks=self.args.eval_ks, batch_size=self.args.per_device_eval_batch_size,
                               num_negatives=self.args.eval_num_negatives, seed=self.args.seed)
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in flatten_report(report).items()}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - start, 4)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def train_id_model(model: PreTrainedModel, ds: datasets.DatasetDict, args: RankingTrainingArguments,
                   train_dataset: datasets.Dataset | None = None, data_collator=None,
                   callbacks: list[TrainerCallback] | None = None) -> RankingTrainer:
    """Train ``model`` on ``ds["train"]``, selecting on ``ds["valid"]``; returns the trainer (``trainer.model``
    holds the best weights when ``load_best_model_at_end``).

    The default data are next-item windows (:func:`training_windows` + :class:`NextItemCollator`); a backbone
    with another objective passes its own ``train_dataset`` and ``data_collator``.
    """
    if train_dataset is None:
        train_dataset = training_windows(ds["train"], model.config.max_len)
    callbacks = list(callbacks or [])
    if args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience))
    trainer = RankingTrainer(model=model, args=args, train_dataset=train_dataset, eval_dataset=ds["valid"],
                             data_collator=data_collator or NextItemCollator(), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    return trainer


def final_ranking_metrics(trainer: RankingTrainer, ds: datasets.DatasetDict) -> dict:
    """What an ID-model run reports: full-ranking metrics (overall, warm, cold) of ``trainer.model`` on the valid
    and test splits, with the run's ``eval_ks``, ``per_device_eval_batch_size``, ``eval_num_negatives`` and
    ``seed``, plus where training stopped (``best_checkpoint``, ``epochs_trained``)."""
    args = trainer.args
    settings = {"ks": args.eval_ks, "batch_size": args.per_device_eval_batch_size,
                "num_negatives": args.eval_num_negatives, "seed": args.seed}
    metrics = {split: evaluate_ranking(trainer.model, ds, split, **settings) for split in ("valid", "test")}
    metrics["best_checkpoint"] = trainer.state.best_model_checkpoint
    metrics["epochs_trained"] = trainer.state.epoch
    return metrics


def save_pretrained_atomic(model: PreTrainedModel, output_dir: str | os.PathLike) -> None:
    """``save_pretrained`` into a temporary folder, then move each file into ``output_dir`` with an atomic
    rename: a crash leaves the previous files or the new ones, never a truncated checkpoint."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".save-", dir=output_dir) as tmp:
        model.save_pretrained(tmp)
        for path in Path(tmp).iterdir():
            os.replace(path, output_dir / path.name)


@dataclass
class PretrainedSASRecArgs:
    """Where an LLM recipe's SASRec comes from (:func:`load_or_train_sasrec`). Field names double as YAML keys."""

    sasrec_checkpoint: str | None = field(default=None, metadata={
        "help": "ID-model folder from recipes/sasrec.py (a SASRec, or an HSTU with --model hstu); when missing "
                "(and needed), a SASRec is trained into output_dir/sasrec."})
    sasrec_epochs: float = field(default=200, metadata={"help": "SASRec epochs upper bound (early stopped)."})
    sasrec_patience: int = field(default=10, metadata={"help": "SASRec early-stopping patience (epochs)."})


def load_or_train_sasrec(ds: datasets.DatasetDict, checkpoint: str | os.PathLike | None, output_dir: str | os.PathLike,
                         seed: int, epochs: float = 200, patience: int | None = 10, use_cpu: bool = False,
                         disable_tqdm: bool = True) -> tuple[SequentialRecommender, Path]:
    """The SASRec an LLM recipe builds on, and its folder: ``checkpoint`` (from ``recipes/sasrec.py``; any ID
    model with SASRec's interface, e.g. an HSTU, fits, :func:`llmrec_ft.collab.load_id_model`), else one
    trained earlier into ``output_dir/sasrec``, else a fresh one with the toolkit's defaults (CE loss, seeded by
    ``seed``, early-stopped on validation NDCG@10 after ``patience`` epochs) trained and saved there.

    Several processes train it data-parallel; the main process saves it and every process loads the saved copy.
    Raises ``FileNotFoundError`` for a ``checkpoint`` without ``config.json``, ``TypeError`` when it holds
    neither a SASRec nor an HSTU, ``ValueError`` when its catalogue size differs from ``ds``'s."""
    path = Path(checkpoint) if checkpoint else Path(output_dir) / "sasrec"
    if checkpoint and not (path / "config.json").exists():
        raise FileNotFoundError(f"sasrec_checkpoint={checkpoint}: no config.json there; train one with "
                                "recipes/sasrec.py or leave sasrec_checkpoint unset")
    if not (path / "config.json").exists():
        set_seed(seed)  # the initial weights, drawn before Trainer seeds anything
        args = RankingTrainingArguments(output_dir=str(Path(output_dir) / "sasrec_train"), seed=seed,
                                        num_train_epochs=epochs, early_stopping_patience=patience, use_cpu=use_cpu,
                                        report_to=[], disable_tqdm=disable_tqdm)
        trainer = train_id_model(SASRec(SASRecConfig(num_items=num_items(ds))), ds, args)
        if trainer.is_world_process_zero():
            save_pretrained_atomic(trainer.model, path)
        PartialState().wait_for_everyone()
    sasrec = load_id_model(path)  # a SASRec, or any ID model with its interface (an HSTU from recipes/sasrec.py)
    if sasrec.config.num_items != num_items(ds):
        raise ValueError(f"{path}: {type(sasrec).__name__} has {sasrec.config.num_items} items, the data has "
                         f"{num_items(ds)}")
    return sasrec, path
