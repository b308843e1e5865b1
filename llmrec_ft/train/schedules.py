"""The three SASRecLLM training schedules (arXiv 2507.05733, Sec. "Training Strategies") as Trainer stages.

A *stage* is one ``CollaborativeSFTTrainer`` run on one dataset with one :class:`StagedFreezing` plan, in its
own folder ``<output_dir>/<stage name>/`` (checkpoints) ending with ``final/`` (the trained parts).

* ``dual_stage``: SASRec is pre-trained on its own (``recipes/sasrec.py``); LoRA is pre-trained on
  *text-only* prompts (collaborative slots left out -- this stage alone is the TALLRec baseline); then the
  hybrid stage trains LoRA + projector on prompts with the collaborative tokens, starting from both.
  SASRec stays frozen there unless ``joint_trains_collab`` (the paper's step 4 only unfreezes the mapping).
* ``hierarchical``: one hybrid stage from a fresh LoRA; LoRA alone first, the projector joins at
  ``projector_from_step``, SASRec at ``collab_from_step`` -- no two parts start moving at the same time.
* ``plug_and_play``: LoRA + projector come from an earlier run (``pretrained_hybrid``), SASRec from a
  *different* checkpoint (e.g. retrained on newer interactions); only the projector is tuned, so the LLM
  side is reused untouched.

Padding-free batches: ``--padding_free true`` (TRL's own flag) trains on ``PackedCollator`` batches (all
prompts of a micro-batch in one row, no pad tokens) instead of padded ones; pair it with
``attn_implementation: llmrec_varlen`` on GPUs (``llmrec_ft.llm.packing`` explains why).

Model selection on validation AUC (CoLLM's and TALLRec's way): ``eval_strategy: steps`` (or ``epoch``) makes
every stage score the ``valid`` rows at that cadence and log ``eval_auc``; with ``load_best_model_at_end:
true``, ``metric_for_best_model: auc`` each stage ends on its best checkpoint, and ``early_stopping_patience``
stops a stage after that many evaluations without a better one (Trainer's ``EarlyStoppingCallback``).

Resuming (``--resume_from_checkpoint true``): a stage whose ``final/`` exists is loaded instead of
retrained; the unfinished one continues from its latest checkpoint with Trainer's own resume (weights,
optimizer, scheduler, data order, RNG).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from transformers import EarlyStoppingCallback, PreTrainedTokenizerBase
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig

from llmrec_ft.eval import roc_auc
from llmrec_ft.llm.collaborative_lm import PROJECTOR_NAME
from llmrec_ft.llm.packing import PackedCollator
from llmrec_ft.train.collator import PointwiseCollator
from llmrec_ft.train.freezing import FreezeStage, StagedFreezing, collaborative_lm_parts, hierarchical_stages
from llmrec_ft.train.scoring import yes_no_scores
from llmrec_ft.train.trainer import (CHECKPOINT_MODEL_DIR, CollaborativeSFTTrainer, TrainableCollaborativeLM,
                                     check_model_selection, pretokenized_args, save_and_release)

logger = logging.getLogger(__name__)

SCHEDULES = ("dual_stage", "hierarchical", "plug_and_play")


@dataclass
class ScheduleArgs:
    """Which schedule, and its knobs. Field names double as recipe YAML keys."""

    schedule: str = field(default="dual_stage", metadata={"help": f"One of {SCHEDULES}."})
    text_stage_max_steps: int | None = field(default=None, metadata={
        "help": "dual_stage: optimizer steps of the text-only LoRA stage (default: max_steps)."})
    joint_trains_collab: bool = field(default=False, metadata={
        "help": "dual_stage: also fine-tune SASRec in the hybrid stage."})
    projector_from_step: int = field(default=10, metadata={
        "help": "hierarchical: step from which the projector trains (LoRA alone before)."})
    collab_from_step: int = field(default=20, metadata={"help": "hierarchical: step from which SASRec trains too."})
    pretrained_hybrid: str | None = field(default=None, metadata={
        "help": "plug_and_play: artifact folder of a trained run (its LoRA adapter and projector are reused)."})
    early_stopping_patience: int | None = field(default=None, metadata={
        "help": "With eval_strategy and load_best_model_at_end: stop a stage after this many evaluations "
                "without a better validation AUC."})

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}; choose one of {SCHEDULES}")
        if self.schedule == "plug_and_play" and not self.pretrained_hybrid:
            raise ValueError("schedule=plug_and_play needs pretrained_hybrid=<artifact folder of a trained run>")


def hybrid_stages(args: ScheduleArgs) -> list[FreezeStage]:
    """The freezing plan of the schedule's (last) hybrid stage."""
    if args.schedule == "hierarchical":
        return hierarchical_stages(args.projector_from_step, args.collab_from_step)
    if args.schedule == "plug_and_play":
        return [FreezeStage(0, ("projector",))]
    return [FreezeStage(0, ("lora", "projector", "collab") if args.joint_trains_collab else ("lora", "projector"))]


def stage_selection(output_dir: str | Path, stage: str) -> dict | None:
    """How a finished stage was selected on valid AUC, from its ``trainer_state.json`` (written when the stage
    trained, in this run or in the run it resumes): every evaluation's ``{step: eval_auc}``, the best checkpoint,
    its AUC and the steps trained; None when the stage did not evaluate."""
    path = Path(output_dir) / stage / "trainer_state.json"
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    aucs = {entry["step"]: entry["eval_auc"] for entry in state["log_history"] if "eval_auc" in entry}
    if not aucs:
        return None
    return {"valid_auc_by_step": aucs, "best_checkpoint": state.get("best_model_checkpoint"),
            "best_valid_auc": state.get("best_metric"), "steps_trained": state["global_step"]}


def final_model_dir(output_dir: str | Path, stage: str) -> Path:
    """Where a finished stage's ``CollaborativeLM.save_pretrained`` folder is (Trainer's ``save_model`` layout)."""
    return Path(output_dir) / stage / "final" / CHECKPOINT_MODEL_DIR


def valid_auc_scorer(tokenizer: PreTrainedTokenizerBase, valid_dataset: datasets.Dataset, collaborative: bool,
                     args: SFTConfig, name: str) -> Callable[[torch.nn.Module], float]:
    """``model -> AUC`` of ``valid_dataset``'s Yes/No scores (encoded rows with ``label``), scored like the test
    sets (:func:`~llmrec_ft.train.scoring.yes_no_scores`)."""
    labels = torch.tensor(valid_dataset["label"])
    return lambda model: roc_auc(yes_no_scores(model, tokenizer, valid_dataset, collaborative, args, name), labels)


def run_stage(name: str, model: TrainableCollaborativeLM, tokenizer: PreTrainedTokenizerBase,
              train_dataset: datasets.Dataset, stages: list[FreezeStage], training_args: SFTConfig,
              collaborative: bool, max_steps: int | None = None, valid_dataset: datasets.Dataset | None = None,
              early_stopping_patience: int | None = None) -> float:
    """Train one stage (or load it if already finished); returns the seconds spent.

    ``training_args`` may be a default ``SFTConfig``: what this stage needs is set on a copy -- its own output
    folder, no Hub push, ``padding_free`` handled by our collator, and ``remove_unused_columns=False`` +
    ``skip_prepare_dataset`` for the pre-tokenized rows (:func:`~llmrec_ft.train.trainer.pretokenized_args`).
    ``valid_dataset``: encoded validation rows (with ``label``), scored for ``eval_auc`` when
    ``training_args.eval_strategy`` is not "no" (module docstring); ``ValueError`` when that is set without them."""
    start = time.perf_counter()
    stage_dir = Path(training_args.output_dir) / name
    final_dir = final_model_dir(training_args.output_dir, name)
    resume = bool(training_args.resume_from_checkpoint) and str(training_args.resume_from_checkpoint).lower() != "false"
    if resume and (final_dir / PROJECTOR_NAME).exists():
        logger.warning("stage %s already finished; loading %s", name, final_dir)
        model.load_pretrained_weights(final_dir)
        return time.perf_counter() - start
    # TRL refuses a custom collator with padding_free=True; ours packs instead (see module doc)
    args = pretokenized_args(dataclasses.replace(
        training_args, output_dir=str(stage_dir), push_to_hub=False, resume_from_checkpoint=None, padding_free=False,
        max_steps=max_steps if max_steps is not None else training_args.max_steps))
    if len(stages) > 1 and args.ddp_find_unused_parameters is None:
        args.ddp_find_unused_parameters = True  # parts frozen in early stages get no gradient under DDP
    freezing = StagedFreezing(collaborative_lm_parts(model), stages)
    if not training_args.padding_free:
        collator = PointwiseCollator(tokenizer.pad_token_id, collaborative)
    elif collaborative:
        collator = PackedCollator(row_fields=("cf_history",), concat_fields=("cf_items",))
    else:
        collator = PackedCollator()
    callbacks = [freezing]
    score_valid = None
    check_model_selection(args, early_stopping_patience, valid_dataset["label"] if valid_dataset else None)
    if args.eval_strategy != "no":
        if valid_dataset is None:
            raise ValueError("eval_strategy is set: run_stage needs the validation rows (valid_dataset)")
        score_valid = valid_auc_scorer(tokenizer, valid_dataset, collaborative, args, f"{name} valid")
    if early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience))
    trainer = CollaborativeSFTTrainer(model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer,
                                      data_collator=collator, callbacks=callbacks, score_valid=score_valid,
                                      eval_dataset=valid_dataset if score_valid else None)
    checkpoint = get_last_checkpoint(str(stage_dir)) if resume and stage_dir.is_dir() else None
    if checkpoint:
        logger.warning("stage %s: resuming from %s", name, checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    save_and_release(trainer, model, final_dir.parent)
    return time.perf_counter() - start
