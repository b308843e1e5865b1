"""SASRecLLM (arXiv 2507.05733): SASRec embeddings projected into an LLM fine-tuned with LoRA through TRL.

    accelerate launch recipes/sasrecllm.py --config recipes/configs/sasrecllm_ml100k.yaml
    python recipes/sasrecllm.py --config recipes/configs/sasrecllm_ml100k.yaml --schedule hierarchical

What one run does (see ``llmrec_ft/train/schedules.py`` for the schedules):

1. prepared data -> pointwise Yes/No samples (liked = rating >= threshold), warm and cold test sets;
2. SASRec: ``sasrec_checkpoint`` (from ``recipes/sasrec.py``) or pre-trained here
   (:func:`~llmrec_ft.collab.trainer.load_or_train_sasrec`);
3. SASRec-alone baselines: its next-item score, and a logistic head on its frozen features;
4. backbone + ``<|user_cf|>``/``<|item_cf|>`` tokens + PEFT LoRA + projector -> ``CollaborativeLM``
   (:mod:`llmrec_ft.train.hybrid_model`; its options are checked when the arguments are parsed);
5. the schedule's stages through ``SFTTrainer`` (dual_stage also yields the text-only LoRA = TALLRec row);
6. P(Yes) AUC (DeLong standard errors) on warm/cold test sets and HR/NDCG@10 over sampled candidates, for
   every model; SASRecLLM's AUC gap over chance and over the text-only stage on the same samples;
7. ``output_dir/artifacts`` (adapter, projector, SASRec, tokenizer, config.yaml, model card) and
   ``output_dir/metrics.json`` (with the git commit of the code); ``--push_to_hub --hub_model_id you/name``
   uploads the artifacts.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState
from transformers import set_seed
from trl import SFTConfig, TrlParser

from llmrec_ft import hub
from llmrec_ft.collab.trainer import PretrainedSASRecArgs, load_or_train_sasrec
from llmrec_ft.data import DataConfig, prepare_dataset
from llmrec_ft.eval.report import format_metrics_table
from llmrec_ft.io import write_json
from llmrec_ft.llm.prompts import load_prompt
from llmrec_ft.provenance import git_commit
from llmrec_ft.train.freezing import FreezeStage
from llmrec_ft.train.hybrid_model import HybridModelArgs, build_hybrid_model
from llmrec_ft.train.pointwise_data import PointwiseConfig, build_pointwise_samples, encode_pointwise, warm_cold_test_sets
from llmrec_ft.train.schedules import ScheduleArgs, final_model_dir, hybrid_stages, run_stage, stage_selection
from llmrec_ft.train.scoring import paired_auc_gaps, ranking_candidates, sasrec_baseline_reports, yes_no_report
from llmrec_ft.train.trainer import check_model_selection
from llmrec_ft.train.zero3 import whole_weights

logger = logging.getLogger(__name__)


@dataclass
class EvalArgs:
    ranking_negatives: int = field(default=99, metadata={"help": "Sampled negatives per ranking user."})
    ranking_users: int | None = field(default=100, metadata={"help": "Test users ranked (None = all, 0 = skip)."})


def main(model_args: HybridModelArgs, sample_args: PointwiseConfig, data_args: DataConfig,
         sasrec_args: PretrainedSASRecArgs, schedule_args: ScheduleArgs, eval_args: EvalArgs,
         training_args: SFTConfig) -> dict:
    push, training_args.push_to_hub = training_args.push_to_hub, False  # pushed once, at the end
    training_args.remove_unused_columns = False
    training_args.dataset_kwargs = {"skip_prepare_dataset": True}
    output_dir, negatives = Path(training_args.output_dir), eval_args.ranking_negatives
    timings: dict[str, float] = {}

    with PartialState().main_process_first():  # several processes: the first writes the cache, once
        ds = prepare_dataset(data_args)
    samples = build_pointwise_samples(ds, sample_args)
    check_model_selection(training_args, schedule_args.early_stopping_patience, samples["valid"]["label"])  # now
    test_sets = warm_cold_test_sets(samples, sample_args)
    ranking_rows = ranking_candidates(ds, negatives, eval_args.ranking_users, sample_args.cf_max_len,
                                      sample_args.max_history, seed=sample_args.sample_seed)

    start = time.perf_counter()
    with whole_weights(training_args):
        sasrec, sasrec_path = load_or_train_sasrec(ds, sasrec_args.sasrec_checkpoint, output_dir, training_args.seed,
                                                   sasrec_args.sasrec_epochs, sasrec_args.sasrec_patience,
                                                   training_args.use_cpu, training_args.disable_tqdm)
    timings["sasrec_pretrain"] = time.perf_counter() - start
    if sample_args.cf_max_len > sasrec.config.max_len:
        raise ValueError(f"cf_max_len={sample_args.cf_max_len} exceeds the SASRec checkpoint's max_len "
                         f"{sasrec.config.max_len}")
    metrics = {"schedule": schedule_args.schedule, "sasrec_checkpoint": str(sasrec_path), "git_commit": git_commit(),
               "samples": {"train": len(samples["train"]), "valid": len(samples["valid"]),
                           **{f"test_{g}": len(s) for g, s in test_sets.items()},
                           "ranking_users": len(ranking_rows) // (negatives + 1)}}
    metrics["sasrec"] = sasrec_baseline_reports(sasrec, samples["train"], test_sets, ranking_rows, negatives)

    set_seed(training_args.seed)
    with whole_weights(training_args):
        model, tokenizer = build_hybrid_model(model_args, schedule_args, sasrec)
    titles = ["", *ds["items"][model_args.item_text_field]]
    template = load_prompt(model_args.prompt, history_cf=model_args.history_cf_tokens)

    def encode(data, collaborative):
        return encode_pointwise(data, tokenizer, template, titles, collaborative, sample_args.max_history,
                                model_args.cf_tokens_per_slot, model_args.max_prompt_tokens)

    def evaluate(collaborative):
        return yes_no_report(model, tokenizer, {g: encode(s, collaborative) for g, s in test_sets.items()},
                             encode(ranking_rows, collaborative), collaborative, negatives, training_args)

    def valid(collaborative):  # model selection on valid AUC, only when the stages evaluate (eval_strategy)
        return encode(samples["valid"], collaborative) if training_args.eval_strategy != "no" else None

    baselines = {"chance": None}  # SASRecLLM's AUC gap over each, on the same test samples
    patience = schedule_args.early_stopping_patience
    if schedule_args.schedule == "dual_stage":  # the text-only LoRA stage: TALLRec's model, the row to beat
        timings["text_stage"] = run_stage("text_stage", model, tokenizer, encode(samples["train"], False),
                                          [FreezeStage(0, ("lora",))], training_args, collaborative=False,
                                          max_steps=schedule_args.text_stage_max_steps, valid_dataset=valid(False),
                                          early_stopping_patience=patience)
        metrics["text_only_lora"], baselines["text_only_lora"] = evaluate(collaborative=False)
    stage = "plug_and_play" if schedule_args.schedule == "plug_and_play" else "hybrid_stage"
    timings[stage] = run_stage(stage, model, tokenizer, encode(samples["train"], True), hybrid_stages(schedule_args),
                               training_args, collaborative=True, valid_dataset=valid(True),
                               early_stopping_patience=patience)
    metrics["sasrecllm"], scores = evaluate(collaborative=True)
    selection = {name: stage_selection(output_dir, name) for name in ("text_stage", stage) if name in timings}
    if any(selection.values()):  # the stages evaluated on valid (eval_strategy): how each was selected
        metrics["model_selection"] = {name: chosen for name, chosen in selection.items() if chosen}
    metrics["sasrecllm_auc_all_gap"] = paired_auc_gaps(scores, baselines, test_sets)
    metrics["timings_s"] = timings

    if PartialState().is_main_process:
        config = {**dataclasses.asdict(model_args), **dataclasses.asdict(sample_args), **dataclasses.asdict(data_args),
                  **dataclasses.asdict(sasrec_args), **dataclasses.asdict(schedule_args),
                  **dataclasses.asdict(eval_args), "sasrec_checkpoint": str(sasrec_path),
                  "training": training_args.to_dict()}
        artifacts = hub.save_artifacts(output_dir / "artifacts", final_model_dir(output_dir, stage), tokenizer, config,
                                       metrics)
        write_json(output_dir / "metrics.json", metrics)
        print(format_metrics_table(metrics, {"metrics": output_dir / "metrics.json", "artifacts": artifacts}))
        if push:
            hub.push_artifacts(artifacts, training_args)
    return metrics


if __name__ == "__main__":
    parser = TrlParser((HybridModelArgs, PointwiseConfig, DataConfig, PretrainedSASRecArgs, ScheduleArgs, EvalArgs,
                        SFTConfig))
    main(*parser.parse_args_and_config())
