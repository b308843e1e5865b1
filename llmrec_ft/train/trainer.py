"""TRL's ``SFTTrainer`` for the hybrid ``CollaborativeLM`` (LoRA LM + projector + SASRec).

``SFTTrainer`` is written for Hugging Face causal LMs; the hybrid model is a plain ``nn.Module`` around
one. Four things differ, and this subclass changes exactly those:

* **Loss.** SFTTrainer's loss runs a fused LM head on ``model.base_model``, which bypasses our
  ``inputs_embeds`` injection. Here the model's own forward computes the loss from ``labels`` (-100 on
  every prompt token, so it is the answer-token cross-entropy), i.e. ``transformers.Trainer``'s loss.
* **Checkpoints.** ``Trainer`` would dump the wrapper's full ``state_dict`` (the frozen base model
  included, and failing on tied embeddings). A checkpoint instead holds ``CollaborativeLM.save_pretrained``
  under ``collaborative_lm/``: the PEFT adapter, ``projector.safetensors`` and SASRec -- everything that
  trains -- next to Trainer's usual optimizer, scheduler, RNG and state files.
* **Resume.** ``_load_from_checkpoint`` loads those three parts back into the live model in place, so
  ``trainer.train(resume_from_checkpoint=...)`` continues with the same weights, optimizer moments, data
  order and RNG state as the interrupted run.
* **Evaluation.** With an ``eval_strategy``, ``evaluate`` reports ``eval_auc``: the AUC of the Yes/No scores of
  the validation rows, scored like the test sets (a function the trainer is given, ``score_valid``) rather than
  Trainer's loss loop over full logits. Trainer's own plumbing then does the rest: ``metric_for_best_model:
  auc``, ``load_best_model_at_end`` (the best checkpoint is loaded with ``_load_from_checkpoint``) and
  ``EarlyStoppingCallback`` -- model selection on valid AUC, as CoLLM and TALLRec train.

Data arrive pre-tokenized and are batched by :class:`~llmrec_ft.train.collator.PointwiseCollator`; Accelerate
(through Trainer) handles devices, mixed precision and distribution. There is no training loop here. The
trainer sets the two arguments that this needs itself (:func:`pretokenized_args`), so a default ``SFTConfig``
works.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list
from transformers import Trainer
from transformers.trainer import TRAINING_ARGS_NAME
from trl import SFTConfig, SFTTrainer

from llmrec_ft.llm.collaborative_lm import CollaborativeLM
from llmrec_ft.train.answer_losses import ANSWER_LOSSES, yes_bce_loss

CHECKPOINT_MODEL_DIR = "collaborative_lm"


def pretokenized_args(args: SFTConfig) -> SFTConfig:
    """A copy of ``args`` with what pre-tokenized rows batched by our collators need: ``remove_unused_columns=False``
    (SFTTrainer keeps only ``input_ids``/``labels``/``seq_lengths`` otherwise, dropping ``cf_history`` and
    ``cf_items``, and the collator fails with ``KeyError: 'cf_history'``) and
    ``dataset_kwargs["skip_prepare_dataset"]`` (SFTTrainer would otherwise tokenize the rows again)."""
    return dataclasses.replace(args, remove_unused_columns=False,
                               dataset_kwargs={**(args.dataset_kwargs or {}), "skip_prepare_dataset": True})


def save_and_release(trainer: Trainer, model: torch.nn.Module, save_dir: str | Path) -> None:
    """After ``trainer.train()``: write ``trainer_state.json`` (losses, runtime, tokens seen: benchmarks read it)
    and the trained parts to ``save_dir`` on every rank (FSDP / ZeRO-3 gather the weights collectively), then
    hand ``model`` back as it was built. Accelerate's ``prepare()`` replaced ``model.forward`` in place by an
    autocast wrapper (``bf16: true``; ``SFTConfig`` defaults to it, CPU included) that Trainer leaves on: the
    live model would keep computing in bf16 while a reload of ``save_dir`` computes in the model's dtype.

    ``prepare()`` also marked the model ``_is_accelerate_prepared``, and an Accelerator returns a marked model
    untouched: the next stage's Trainer (dual-stage and hierarchical schedules train the same model twice) then
    ran on one process without autocast, in the weights' dtype (fp32 on the default CPU job: 1.8x slower steps,
    and not the precision the config asks for). The mark is removed with the wrapper. Under DDP the mark sits on
    the DDP wrapper, not on ``model``, so several processes were not affected."""
    trainer.save_state()
    trainer.save_model(str(save_dir))
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.unwrap_model(model, keep_fp32_wrapper=False)  # restores the original forward
    model.__dict__.pop("_is_accelerate_prepared", None)


def check_model_selection(args: SFTConfig, early_stopping_patience: int | None,
                          valid_labels: list[int] | None = None) -> None:
    """Refuse, before anything trains, settings under which selection on valid AUC cannot work: patience without
    ``eval_strategy`` and ``load_best_model_at_end``, a best-model metric other than ``auc`` (the only metric
    evaluation reports), or validation rows with one label (``valid_labels``, when evaluation is on).

    Raises:
        ValueError: naming the setting to change.
    """
    evaluates = args.eval_strategy != "no"
    if early_stopping_patience is not None and (not evaluates or not args.load_best_model_at_end):
        raise ValueError("early_stopping_patience needs eval_strategy (steps or epoch), load_best_model_at_end: true "
                         "and metric_for_best_model: auc")
    if evaluates and args.load_best_model_at_end and args.metric_for_best_model not in ("auc", "eval_auc"):
        raise ValueError(f"metric_for_best_model={args.metric_for_best_model!r} (Trainer's default when it is unset): "
                         "evaluation reports only the validation AUC; set metric_for_best_model: auc")
    if evaluates and valid_labels is not None and len(set(valid_labels)) < 2:
        raise ValueError(f"the {len(valid_labels)} validation rows hold one label only; AUC needs both "
                         "(raise max_valid_samples)")


class TrainableCollaborativeLM(CollaborativeLM):
    """``CollaborativeLM`` plus the one ``PreTrainedModel`` method SFTTrainer calls on any model it trains, and
    the answer loss (``llmrec_ft.train.answer_losses``): ``loss="yes_bce"`` with ``yes_token_id`` replaces
    the answer cross-entropy by BCE on the "Yes" logit."""

    def __init__(self, *args, loss: str = "yes_no_ce", yes_token_id: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if loss not in ANSWER_LOSSES:
            raise ValueError(f"loss={loss!r}; choose one of {ANSWER_LOSSES}")
        if loss == "yes_bce" and yes_token_id is None:
            raise ValueError("loss='yes_bce' needs yes_token_id")
        self.loss, self.yes_token_id = loss, yes_token_id

    def forward(self, input_ids, attention_mask=None, labels=None, cf_history=None, cf_items=None, **kwargs):
        num_items_in_batch = kwargs.get("num_items_in_batch")
        out = super().forward(input_ids, attention_mask, labels, cf_history, cf_items, **kwargs)
        if labels is not None and self.loss == "yes_bce":
            out.loss = yes_bce_loss(out.logits, labels, self.yes_token_id, num_items_in_batch)
        return out

    def add_model_tags(self, tags) -> None:
        self.lm.add_model_tags(tags)


class CollaborativeSFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose model is a :class:`TrainableCollaborativeLM` (see the module docstring)."""

    def __init__(self, model: TrainableCollaborativeLM, args: SFTConfig,
                 score_valid: Callable[[torch.nn.Module], float] | None = None, **kwargs):
        """``score_valid(model) -> AUC`` on the validation rows: needed when ``args.eval_strategy`` is not "no"
        (and then ``eval_dataset`` must be those rows, which Trainer insists on). Raises ``ValueError`` without
        it, and with FSDP or ZeRO-3 (the scorer runs the model outside the engine, on whole weights)."""
        super().__init__(model, pretokenized_args(args), **kwargs)
        self.score_valid = score_valid
        if self.args.eval_strategy != "no":
            strategy = getattr(self.args.eval_strategy, "value", self.args.eval_strategy)
            if score_valid is None:
                raise ValueError(f"eval_strategy={strategy}: evaluation needs the validation rows' scorer "
                                 "(score_valid); the recipes pass it")
            zero3 = self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3
            if self.is_fsdp_enabled or zero3:
                raise ValueError("evaluation during training scores whole weights: use DDP or ZeRO-2, not FSDP or "
                                 "ZeRO-3 (or eval_strategy: no)")
            check_model_selection(self.args, early_stopping_patience=None)
        if self.is_fsdp_enabled:  # sharded saves would hold no loadable adapter (PEFT's FSDP examples do the same)
            self.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """``{"<prefix>_auc": AUC of the validation rows' Yes/No scores}``, logged and passed to the callbacks
        (early stopping, best checkpoint) as ``Trainer.evaluate``'s metrics are. The main process scores the rows
        and broadcasts the AUC, so every process takes the same decision. Raises ``ValueError`` for another
        ``eval_dataset`` (the scorer is bound to the validation rows)."""
        if self.score_valid is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if eval_dataset is not None and eval_dataset is not self.eval_dataset:
            raise ValueError("evaluate() scores the validation rows it was built with; score other rows with "
                             "llmrec_ft.train.scoring.yes_no_report")
        auc = [self.score_valid(self.model) if self.accelerator.is_main_process else None]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(auc)
        metrics = {f"{metric_key_prefix}_auc": auc[0]}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        if not self.args.should_save:
            return
        output_dir = Path(output_dir if output_dir is not None else self.args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        # state_dict: what Trainer.save_model gathered from FSDP shards / DeepSpeed partitions (None otherwise)
        model = self.accelerator.unwrap_model(self.model)
        model.save_pretrained(output_dir / CHECKPOINT_MODEL_DIR, state_dict=state_dict)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        model.load_pretrained_weights(Path(resume_from_checkpoint) / CHECKPOINT_MODEL_DIR)

    def _load_best_model(self) -> None:
        """``load_best_model_at_end``: our checkpoints hold ``collaborative_lm/``, which Trainer's loader does not
        know; load it like a resume does."""
        self._load_from_checkpoint(self.state.best_model_checkpoint)
