"""SASRecLLM (arXiv 2507.05733): SASRec embeddings projected into an LLM fine-tuned with LoRA through TRL.

    accelerate launch recipes/sasrecllm.py --config recipes/configs/sasrecllm_ml100k.yaml
    python recipes/sasrecllm.py --config recipes/configs/sasrecllm_ml100k.yaml --schedule hierarchical

What one run does (see ``llmrec_ft/train/schedules.py`` for the schedules):

1. prepared data -> pointwise Yes/No samples (liked = rating >= threshold), warm and cold test sets;
2. SASRec: ``sasrec_checkpoint`` (from ``recipes/sasrec.py``) or pre-trained here;
3. SASRec-alone baselines: its next-item score, and a logistic head on its frozen features;
4. backbone + ``<|user_cf|>``/``<|item_cf|>`` tokens + PEFT LoRA + projector -> ``CollaborativeLM``;
5. the schedule's stages through ``SFTTrainer`` (dual_stage also yields the text-only LoRA = TALLRec row);
6. P(Yes) AUC (DeLong standard errors) on warm/cold test sets and HR/NDCG@10 over sampled candidates, for
   every model; SASRecLLM's AUC gap over chance and over the text-only stage on the same samples;
7. ``output_dir/artifacts`` (adapter, projector, SASRec, tokenizer, config.yaml, model card) and
   ``output_dir/metrics.json``; ``--push_to_hub --hub_model_id you/name`` uploads the artifacts.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import set_seed
from trl import SFTConfig, TrlParser

from llmrec_ft import hub
from llmrec_ft.collab.sasrec import SASRec, SASRecConfig
from llmrec_ft.collab.trainer import RankingTrainingArguments, save_pretrained_atomic, train_id_model
from llmrec_ft.data import DataConfig, num_items, prepare_dataset
from llmrec_ft.eval.report import format_metrics_table
from llmrec_ft.io import write_json
from llmrec_ft.llm.backbone import EMBEDDED_MODEL, compile_decoder_layers, load_backbone
from llmrec_ft.llm.packing import padded_batch_attention
from llmrec_ft.llm.projector import CollaborativeProjector
from llmrec_ft.llm.prompts import load_prompt
from llmrec_ft.llm.tokens import add_collaborative_tokens
from llmrec_ft.train.freezing import FreezeStage
from llmrec_ft.train.pointwise_data import (PointwiseConfig, answer_token_ids, build_pointwise_samples,
                                            encode_pointwise, warm_cold_test_sets)
from llmrec_ft.train.schedules import ScheduleArgs, final_model_dir, hybrid_stages, run_stage
from llmrec_ft.train.scoring import (SASRecClassifier, auc_report, next_item_scores, paired_auc_gaps,
                                     ranking_candidates, ranking_report, yes_logit_gaps)
from llmrec_ft.train.trainer import TrainableCollaborativeLM
from llmrec_ft.train.zero3 import whole_weights

logger = logging.getLogger(__name__)


@dataclass
class ModelArgs:
    model_name_or_path: str = field(default=EMBEDDED_MODEL, metadata={"help": "Hub id, local dir or embedded name."})
    dtype: str = field(default="float32", metadata={"help": "float32 | bfloat16 | float16."})
    attn_implementation: str = field(default="sdpa", metadata={
        "help": "sdpa | llmrec_varlen (PyTorch varlen FlashAttention; with padding_free) | flash_attention_2 | eager."})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: 4-bit base model (bitsandbytes, GPU)."})
    load_in_8bit: bool = field(default=False, metadata={"help": "8-bit base model (bitsandbytes, GPU)."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                                           metadata={"help": "Modules that get LoRA ('all-linear' works too)."})
    projector_hidden_dim: int = field(default=320, metadata={"help": "d_exp of the 2-layer projector MLP."})
    cf_tokens_per_slot: int = field(default=1, metadata={"help": "LLM tokens per projected SASRec vector."})
    item_text_field: str = field(default="title", metadata={"help": "Item column shown in prompts: title | text."})
    max_prompt_tokens: int | None = field(default=None, metadata={"help": "Drop oldest history beyond this."})
    answer_only_loss: bool = field(default=True, metadata={
        "help": "Apply the LM head only where a label is (the answer): same loss, no [batch, length, vocab] logits."})
    compile_layers: bool = field(default=False, metadata={
        "help": "torch.compile each decoder layer (GPU speed; seconds of compilation at the start)."})
    prompt: str = field(default="yes_no", metadata={"help": "Packaged template (llmrec_ft/prompts/) or a .jinja path: yes_no | collm_yes_no."})
    history_cf_tokens: bool = field(default=True, metadata={
        "help": "History items get <|item_cf|> slots (false: only user and candidate, CoLLM's prompt)."})
    loss: str = field(default="yes_no_ce", metadata={
        "help": "yes_no_ce (answer cross-entropy) | yes_bce (BCE on the Yes logit, scored by sigmoid(Yes); CoLLM)."})


@dataclass
class SASRecArgs:
    sasrec_checkpoint: str | None = field(default=None, metadata={
        "help": "SASRec folder from recipes/sasrec.py; when missing, one is pre-trained here into output_dir/sasrec."})
    sasrec_epochs: float = field(default=200, metadata={"help": "Pre-training epochs upper bound (early stopped)."})
    sasrec_patience: int = field(default=10, metadata={"help": "Early-stopping patience of the pre-training."})


@dataclass
class EvalArgs:
    ranking_negatives: int = field(default=99, metadata={"help": "Sampled negatives per ranking user."})
    ranking_users: int | None = field(default=100, metadata={"help": "Test users ranked (None = all, 0 = skip)."})


def load_or_train_sasrec(args: SASRecArgs, ds, training_args: SFTConfig) -> tuple[SASRec, str]:
    if args.sasrec_checkpoint:
        if not (Path(args.sasrec_checkpoint) / "config.json").exists():
            raise FileNotFoundError(f"sasrec_checkpoint={args.sasrec_checkpoint}: no config.json there; train one "
                                    "with recipes/sasrec.py or leave sasrec_checkpoint unset")
        return SASRec.from_pretrained(args.sasrec_checkpoint), args.sasrec_checkpoint
    target = Path(training_args.output_dir) / "sasrec"
    if (target / "config.json").exists():
        return SASRec.from_pretrained(target), str(target)
    set_seed(training_args.seed)  # the initial weights are drawn before Trainer seeds anything
    model = SASRec(SASRecConfig(num_items=num_items(ds)))
    rank_args = RankingTrainingArguments(output_dir=str(Path(training_args.output_dir) / "sasrec_pretrain"),
                                         num_train_epochs=args.sasrec_epochs, seed=training_args.seed,
                                         early_stopping_patience=args.sasrec_patience, use_cpu=training_args.use_cpu,
                                         report_to=[], disable_tqdm=training_args.disable_tqdm)
    trainer = train_id_model(model, ds, rank_args)
    if trainer.is_world_process_zero():
        save_pretrained_atomic(trainer.model, target)
    PartialState().wait_for_everyone()
    return SASRec.from_pretrained(target), str(target)


def ranked(score, rows, negatives: int) -> dict:
    return ranking_report(score(rows), negatives) if len(rows) else {}


def sasrec_baselines(sasrec: SASRec, train, test_sets, ranking_rows, negatives: int) -> dict:
    classifier = SASRecClassifier(sasrec).fit(train)
    report = {}
    for name, score in (("next_item", lambda data: next_item_scores(sasrec, data)), ("classifier", classifier.predict)):
        report[name] = {**auc_report({g: score(s) for g, s in test_sets.items()}, test_sets),
                        **ranked(score, ranking_rows, negatives)}
    return report


def llm_report(model, tokenizer, encoded_tests, encoded_ranking, collaborative: bool, batch_size: int,
               negatives: int, bf16: bool) -> tuple[dict, torch.Tensor]:
    """AUC (with DeLong standard errors) and sampled-ranking metrics; also the test scores, warm then cold.
    ``bf16``: score under the same bf16 autocast as training, as ``Trainer.evaluate`` does."""
    yes, no = answer_token_ids(tokenizer)
    no = None if model.loss == "yes_bce" else no  # score as trained: sigmoid(Yes logit)
    start = time.perf_counter()

    def score(data):
        return yes_logit_gaps(model, data, tokenizer.pad_token_id, yes, no, collaborative, batch_size)

    autocast = torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16, enabled=bf16)
    with padded_batch_attention(model), autocast:  # scoring batches are padded
        test_scores = {g: score(s) for g, s in encoded_tests.items()}
        report = {**auc_report(test_scores, encoded_tests), **ranked(score, encoded_ranking, negatives)}
    report["eval_seconds"] = time.perf_counter() - start
    return report, torch.cat(list(test_scores.values()))


def build_model(model_args: ModelArgs, schedule_args: ScheduleArgs, sasrec: SASRec):
    """Fresh LoRA + projector around ``sasrec`` -- or, for plug-and-play, the trained ones of an earlier run."""
    if schedule_args.schedule == "plug_and_play":
        trained, tokenizer, trained_config = hub.load_artifacts(schedule_args.pretrained_hybrid)
        if trained_config["model_name_or_path"] != model_args.model_name_or_path:
            raise ValueError(f"pretrained_hybrid was trained on {trained_config['model_name_or_path']!r}, "
                             f"but model_name_or_path is {model_args.model_name_or_path!r}")
        if trained.projector.in_dim != sasrec.config.hidden_size:
            raise ValueError(f"the new SASRec is {sasrec.config.hidden_size}-d but the projector expects "
                             f"{trained.projector.in_dim}-d")
        return TrainableCollaborativeLM(trained.lm, trained.projector, sasrec, trained.token_ids,
                                        answer_only_loss=model_args.answer_only_loss, loss=model_args.loss,
                                        yes_token_id=answer_token_ids(tokenizer)[0]), tokenizer
    lm, tokenizer = load_backbone(model_args.model_name_or_path, dtype=model_args.dtype,
                                  attn_implementation=model_args.attn_implementation,
                                  load_in_4bit=model_args.load_in_4bit, load_in_8bit=model_args.load_in_8bit)
    token_ids = add_collaborative_tokens(tokenizer, lm)
    device = lm.get_input_embeddings().weight.device  # quantised models are placed on load, not by Trainer
    target_modules = model_args.lora_target_modules
    lm = get_peft_model(lm, LoraConfig(r=model_args.lora_r, lora_alpha=model_args.lora_alpha,
                                       lora_dropout=model_args.lora_dropout, task_type="CAUSAL_LM",
                                       target_modules=target_modules[0] if target_modules == ["all-linear"]
                                       else target_modules))
    embeddings = lm.get_input_embeddings()
    sasrec.to(device)
    projector = CollaborativeProjector(sasrec.config.hidden_size, model_args.projector_hidden_dim,
                                       embeddings.embedding_dim, model_args.cf_tokens_per_slot).to(device)
    projector.scale_to_embedding_norm_(sasrec.all_item_embeddings()[1:].detach(), embeddings.weight)
    if model_args.compile_layers:
        compile_decoder_layers(lm)
    return TrainableCollaborativeLM(lm, projector.to(device), sasrec, token_ids,
                                    answer_only_loss=model_args.answer_only_loss, loss=model_args.loss,
                                    yes_token_id=answer_token_ids(tokenizer)[0]), tokenizer


def main(model_args: ModelArgs, sample_args: PointwiseConfig, data_args: DataConfig, sasrec_args: SASRecArgs,
         schedule_args: ScheduleArgs, eval_args: EvalArgs, training_args: SFTConfig) -> dict:
    push, training_args.push_to_hub = training_args.push_to_hub, False  # pushed once, at the end
    training_args.remove_unused_columns = False
    training_args.dataset_kwargs = {"skip_prepare_dataset": True}
    output_dir = Path(training_args.output_dir)
    timings: dict[str, float] = {}

    with PartialState().main_process_first():  # several processes: the first writes the cache, once
        ds = prepare_dataset(data_args)
    samples = build_pointwise_samples(ds, sample_args)
    test_sets = warm_cold_test_sets(samples, sample_args)
    ranking_rows = (ranking_candidates(ds, eval_args.ranking_negatives, eval_args.ranking_users, sample_args.cf_max_len,
                                       sample_args.max_history, seed=sample_args.sample_seed)
                    if eval_args.ranking_users != 0 else Dataset.from_dict({}))

    start = time.perf_counter()
    with whole_weights(training_args):
        sasrec, sasrec_path = load_or_train_sasrec(sasrec_args, ds, training_args)
    timings["sasrec_pretrain"] = time.perf_counter() - start
    if sample_args.cf_max_len > sasrec.config.max_len:
        raise ValueError(f"cf_max_len={sample_args.cf_max_len} exceeds the SASRec checkpoint's max_len "
                         f"{sasrec.config.max_len}")
    metrics = {"schedule": schedule_args.schedule, "sasrec_checkpoint": sasrec_path,
               "samples": {"train": len(samples["train"]), **{f"test_{g}": len(s) for g, s in test_sets.items()},
                           "ranking_users": len(ranking_rows) // (eval_args.ranking_negatives + 1)}}
    metrics["sasrec"] = sasrec_baselines(sasrec, samples["train"], test_sets, ranking_rows,
                                         eval_args.ranking_negatives)

    set_seed(training_args.seed)
    with whole_weights(training_args):
        model, tokenizer = build_model(model_args, schedule_args, sasrec)
    titles = ["", *ds["items"][model_args.item_text_field]]
    template = load_prompt(model_args.prompt, history_cf=model_args.history_cf_tokens)

    def encode(data, collaborative):
        return encode_pointwise(data, tokenizer, template, titles, collaborative, sample_args.max_history,
                                model_args.cf_tokens_per_slot, model_args.max_prompt_tokens)

    batch = training_args.per_device_eval_batch_size
    if schedule_args.schedule == "dual_stage":
        timings["text_stage"] = run_stage("text_stage", model, tokenizer, encode(samples["train"], False),
                                          [FreezeStage(0, ("lora",))], training_args, collaborative=False,
                                          max_steps=schedule_args.text_stage_max_steps)
        metrics["text_only_lora"], text_scores = llm_report(
            model, tokenizer, {g: encode(s, False) for g, s in test_sets.items()}, encode(ranking_rows, False),
            False, batch, eval_args.ranking_negatives, training_args.bf16)
    stage = "plug_and_play" if schedule_args.schedule == "plug_and_play" else "hybrid_stage"
    timings[stage] = run_stage(stage, model, tokenizer, encode(samples["train"], True), hybrid_stages(schedule_args),
                               training_args, collaborative=True)
    metrics["sasrecllm"], scores = llm_report(model, tokenizer, {g: encode(s, True) for g, s in test_sets.items()},
                                              encode(ranking_rows, True), True, batch, eval_args.ranking_negatives,
                                              training_args.bf16)
    baselines = {"chance": None, **({"text_only_lora": text_scores} if schedule_args.schedule == "dual_stage" else {})}
    metrics["sasrecllm_auc_all_gap"] = paired_auc_gaps(scores, baselines, test_sets)
    metrics["timings_s"] = timings

    if PartialState().is_main_process:
        config = {**dataclasses.asdict(model_args), **dataclasses.asdict(sample_args), **dataclasses.asdict(data_args),
                  **dataclasses.asdict(sasrec_args), **dataclasses.asdict(schedule_args),
                  **dataclasses.asdict(eval_args), "sasrec_checkpoint": sasrec_path,
                  "training": training_args.to_dict()}
        artifacts = hub.save_artifacts(output_dir / "artifacts", final_model_dir(output_dir, stage), tokenizer, config,
                                       metrics)
        write_json(output_dir / "metrics.json", metrics)
        print(format_metrics_table(metrics, {"metrics": output_dir / "metrics.json", "artifacts": artifacts}))
        if push:
            hub.push_artifacts(artifacts, training_args)
    return metrics


if __name__ == "__main__":
    parser = TrlParser((ModelArgs, PointwiseConfig, DataConfig, SASRecArgs, ScheduleArgs, EvalArgs, SFTConfig))
    main(*parser.parse_args_and_config())
