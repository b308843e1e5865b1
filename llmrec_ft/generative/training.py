"""Fine-tuning an LLM to generate items: LoRA + the new code-token rows, through TRL's ``SFTTrainer``.

Model assembly (:func:`build_generative_model`), in the order PEFT needs: base model -> code tokens
(``tokens.add_code_tokens``) and, for collaborative prompts, the ``<|user_cf|>``/``<|item_cf|>`` placeholders
-> ``get_peft_model`` with ``LoraConfig(trainable_token_indices=...)``, so exactly the code tokens' input (and
untied output) embedding rows train and are saved with the adapter (PEFT ``TrainableTokensLayer``; a tied head
uses the input rows' layer) -> for collaborative prompts, a
:class:`~llmrec_ft.train.trainer.TrainableCollaborativeLM` around it with a projector and the (frozen) SASRec.

Training (:func:`train_generative`):

* plain prompts: TRL's ``SFTTrainer`` on the pre-tokenized prompt-completion dataset of
  :meth:`GenerativeExamples.training_dataset` (``input_ids`` + ``completion_mask``; ``completion_only_loss``
  makes TRL set every prompt label to -100) with TRL's collator. Two changes (:class:`GenerativeSFTTrainer`):
  the loss is the model's own ``labels`` cross-entropy (``transformers.Trainer.compute_loss``), because TRL
  1.16's fused LM-head loss reads ``lm_head.weight``/``.bias`` directly, which fails on PEFT's
  ``TrainableTokensWrapper`` (no ``bias``) and would in any case skip the trained code-token rows of the head;
  and saves leave the resized embedding matrices out of the adapter (:meth:`GenerativeSFTTrainer._save`);
* collaborative prompts: the toolkit's ``CollaborativeSFTTrainer`` (an ``SFTTrainer`` whose model injects
  projected SASRec vectors) with ``PointwiseCollator`` (labels already -100 on the prompt); the projector
  and LoRA train, SASRec stays frozen (it was trained on the same training split).

Both write the trained parts under ``<output_dir>/final`` (:func:`final_dir`: a PEFT adapter folder, or a
``CollaborativeLM.save_pretrained`` folder): LoRA, the code-token rows (and the projector), not the resized
``[V, H]`` matrices; :func:`load_generative_model` rebuilds the model from it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import Trainer
from trl import SFTConfig, SFTTrainer

from llmrec_ft.generative.semantic_ids import SemanticIDs
from llmrec_ft.generative.tokens import add_code_tokens, trainable_token_indices
from llmrec_ft.llm.backbone import EMBEDDED_MODEL, check_backbone_options, load_backbone
from llmrec_ft.llm.collaborative_lm import CollaborativeLM
from llmrec_ft.llm.projector import CollaborativeProjector
from llmrec_ft.llm.tokens import add_collaborative_tokens
from llmrec_ft.train.collator import PointwiseCollator
from llmrec_ft.train.trainer import (CHECKPOINT_MODEL_DIR, CollaborativeSFTTrainer, TrainableCollaborativeLM,
                                     save_and_release)

logger = logging.getLogger(__name__)
FINAL_DIR = "final"  # under output_dir: what train_generative saves


@dataclass
class GenerativeModelArgs:
    """Backbone and adapter. Field names double as recipe YAML keys."""

    model_name_or_path: str = field(default=EMBEDDED_MODEL, metadata={"help": "Hub id, local dir or embedded name."})
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16 | float16."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa | flash_attention_2 | eager."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                           metadata={"help": "Modules that get LoRA ('all-linear' works too)."})
    projector_hidden_dim: int = field(default=320, metadata={"help": "Collaborative prompts: projector width."})

    def __post_init__(self):
        check_backbone_options(self.model_name_or_path, self.dtype, self.attn_implementation)  # before data and SIDs


class GenerativeSFTTrainer(SFTTrainer):
    """``SFTTrainer`` with the model's own loss and an adapter that holds only the trained parts (see the module
    docstring for why)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Trainer's save (the one path for final saves and checkpoints, FSDP / ZeRO-3 included) with PEFT's
        ``save_pretrained(save_embedding_layers=False)``: LoRA plus the code-token rows, 4.4 MiB instead of
        223 MiB on SmolLM2-135M. PEFT's default ``"auto"`` sees the resized vocabulary and adds both whole
        ``[V, H]`` matrices, as a precaution against embeddings changed by other means (PEFT "Trainable Tokens"
        docs). They are not needed here: every new row is a code token's, whose full trained value
        ``TrainableTokensLayer`` saves (it replaces rows rather than adding a delta, so the value the resize gave
        them at reload does not matter), and every other row is the base checkpoint's, which
        ``load_generative_model`` loads again. Trainer calls ``save_pretrained`` without extra arguments, so the
        flag is bound for the duration of the call."""
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        model.save_pretrained = functools.partial(type(model).save_pretrained, model, save_embedding_layers=False)
        try:
            super()._save(output_dir, state_dict)
        finally:
            del model.save_pretrained


def build_generative_model(args: GenerativeModelArgs, sids: SemanticIDs | None, sasrec: torch.nn.Module | None = None):
    """``(model, tokenizer, code_token_ids)``: a PEFT LM (or ``TrainableCollaborativeLM`` when ``sasrec`` is
    given) with LoRA and trainable code-token rows; ``code_token_ids`` is ``[N, L + 1]`` (None without SIDs)."""
    lm, tokenizer = load_backbone(args.model_name_or_path, dtype=args.dtype,
                                  attn_implementation=args.attn_implementation)
    code_ids, cf_ids = _add_tokens(lm, tokenizer, sids, sasrec is not None)
    targets = args.lora_target_modules
    config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                        task_type="CAUSAL_LM", target_modules=targets[0] if targets == ["all-linear"] else targets,
                        trainable_token_indices=trainable_token_indices(tokenizer, sids, lm) if sids else None)
    lm = get_peft_model(lm, config)
    if sasrec is None:
        return lm, tokenizer, code_ids
    device, embeddings = lm.get_input_embeddings().weight.device, lm.get_input_embeddings()
    sasrec.to(device).requires_grad_(False)
    projector = CollaborativeProjector(sasrec.config.hidden_size, args.projector_hidden_dim,
                                       embeddings.weight.shape[1]).to(device)
    projector.scale_to_embedding_norm_(sasrec.all_item_embeddings()[1:].detach(), embeddings.weight)
    return TrainableCollaborativeLM(lm, projector, sasrec, cf_ids), tokenizer, code_ids


def _add_tokens(lm, tokenizer, sids: SemanticIDs | None, collaborative: bool):
    """Code tokens first, then placeholders: the same order at build and reload time gives the same ids."""
    code_ids = add_code_tokens(tokenizer, lm, sids) if sids is not None else None
    cf_ids = add_collaborative_tokens(tokenizer, lm) if collaborative else None
    return code_ids, cf_ids


def train_generative(model, tokenizer, train_dataset: datasets.Dataset, training_args: SFTConfig) -> float:
    """Train with completion-only loss and save the trained parts to ``<output_dir>/final``; returns seconds."""
    start = time.perf_counter()
    collaborative = isinstance(model, CollaborativeLM)
    args = dataclasses.replace(training_args, completion_only_loss=True, push_to_hub=False, padding_free=False,
                               remove_unused_columns=not collaborative,
                               dataset_kwargs={"skip_prepare_dataset": True} if collaborative else None)
    if collaborative:
        trainer = CollaborativeSFTTrainer(model=model, args=args, train_dataset=train_dataset,
                                          processing_class=tokenizer,
                                          data_collator=PointwiseCollator(tokenizer.pad_token_id, True))
    else:
        trainer = GenerativeSFTTrainer(model=model, args=args, train_dataset=train_dataset, processing_class=tokenizer)
    trainer.train()
    save_and_release(trainer, model, Path(training_args.output_dir) / FINAL_DIR)
    model.eval()
    return time.perf_counter() - start


def final_dir(output_dir: str | Path, collaborative: bool) -> Path:
    """Where :func:`train_generative` leaves the trained parts (PEFT adapter or CollaborativeLM folder)."""
    return Path(output_dir) / FINAL_DIR / (CHECKPOINT_MODEL_DIR if collaborative else "")


def load_generative_model(model_dir: str | Path, args: GenerativeModelArgs, sids: SemanticIDs | None,
                          sasrec: torch.nn.Module | None = None):
    """``(model, tokenizer, code_token_ids)`` rebuilt from a :func:`train_generative` folder (or artifacts): the
    base model per ``args``, the same tokens added in the same order (their rows set to the same mean), then the
    saved adapter, whose code-token rows replace those rows (and projector)."""
    lm, tokenizer = load_backbone(args.model_name_or_path, dtype=args.dtype,
                                  attn_implementation=args.attn_implementation)
    if sasrec is not None:
        code_ids = add_code_tokens(tokenizer, lm, sids) if sids is not None else None
        model = CollaborativeLM.from_pretrained(model_dir, lm, tokenizer, sasrec)  # adds the placeholders
    else:
        code_ids, _ = _add_tokens(lm, tokenizer, sids, False)
        model = PeftModel.from_pretrained(lm, str(model_dir))
    return model.eval(), tokenizer, code_ids
