"""Where a CPU training step of the default SASRecLLM job goes (issue 18), and what eager attention and no LoRA
dropout save.

    python benchmarks/cpu_step_profile.py      # ~2 min on 2 cores

The default job's model (``recipes/configs/sasrecllm_ml100k.yaml``: SmolLM2-135M in float32, LoRA r=8 on q/k/v/o,
projector, SASRec) and its first 8 training prompts, with and without the collaborative tokens. A step is
forward + backward under bf16 autocast, the way Trainer runs it (no optimizer: identical in every variant);
time = mean of 3 steps after one warm-up. Variants: ``sdpa`` / ``eager`` attention x LoRA dropout 0.05 / 0;
for ``sdpa`` + dropout 0.05 (the configuration before session 5) ``torch.profiler`` gives each op's share of
the step's CPU time; for the default (``eager`` + dropout 0) a hybrid step also runs without autocast, in the
float32 weights, as the second stage did before session 5's fix. SASRec's weights are random: they do not change
the cost.
Writes ``benchmarks/results/cpu_step_profile.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import runpy
import time
from pathlib import Path

import torch
from trl import SFTConfig, TrlParser

from llmrec_ft.collab.sasrec import SASRec, SASRecConfig
from llmrec_ft.collab.trainer import PretrainedSASRecArgs
from llmrec_ft.data import DataConfig, num_items, prepare_dataset
from llmrec_ft.io import write_json
from llmrec_ft.llm.prompts import load_prompt
from llmrec_ft.train.collator import PointwiseCollator
from llmrec_ft.train.hybrid_model import HybridModelArgs, build_hybrid_model
from llmrec_ft.train.pointwise_data import PointwiseConfig, build_pointwise_samples, encode_pointwise
from llmrec_ft.train.schedules import ScheduleArgs

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "sasrecllm_ml100k.yaml"
VARIANTS = {"sdpa, dropout 0.05": ("sdpa", 0.05), "eager, dropout 0.05": ("eager", 0.05),
            "sdpa, dropout 0": ("sdpa", 0.0), "eager, dropout 0": ("eager", 0.0)}
PROFILED, DEFAULT = "sdpa, dropout 0.05", "eager, dropout 0"
OPS = ("aten::mm", "aten::_scaled_dot_product_flash_attention_for_cpu",
       "aten::_scaled_dot_product_flash_attention_for_cpu_backward", "aten::bernoulli_", "aten::copy_")


def step_seconds(model, batch: dict, steps: int = 3, autocast: bool = True) -> float:
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(**batch).loss
        loss.backward()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def op_shares(model, batch: dict) -> dict:
    """Share of one step's self CPU time per op in ``OPS``."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
    averages = prof.key_averages()
    total = sum(event.self_cpu_time_total for event in averages)
    return {event.key: event.self_cpu_time_total / total for event in averages if event.key in OPS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu_step_profile.json")
    cli = parser.parse_args()
    recipe = runpy.run_path(str(ROOT / "recipes" / "sasrecllm.py"))  # its EvalArgs; runs nothing
    model_args, sample_args, data_args, _, schedule_args, _, training_args = TrlParser(
        (HybridModelArgs, PointwiseConfig, DataConfig, PretrainedSASRecArgs, ScheduleArgs, recipe["EvalArgs"],
         SFTConfig)).parse_args_and_config(["--config", str(CONFIG), "--output_dir", "/tmp/cpu_step_profile"])
    ds = prepare_dataset(data_args)
    train = build_pointwise_samples(ds, sample_args)["train"].select(range(training_args.per_device_train_batch_size))
    titles = ["", *ds["items"][model_args.item_text_field]]
    template = load_prompt(model_args.prompt, history_cf=model_args.history_cf_tokens)
    torch.manual_seed(0)
    sasrec = SASRec(SASRecConfig(num_items=num_items(ds), max_len=sample_args.cf_max_len))
    rows = {}
    for name, (attention, dropout) in VARIANTS.items():
        args = dataclasses.replace(model_args, attn_implementation=attention, lora_dropout=dropout)
        model, tokenizer = build_hybrid_model(args, schedule_args, sasrec)
        model.train()
        rows[name] = {}
        for collaborative in (False, True):
            encoded = encode_pointwise(train, tokenizer, template, titles, collaborative, sample_args.max_history,
                                       args.cf_tokens_per_slot, args.max_prompt_tokens)
            batch = PointwiseCollator(tokenizer.pad_token_id, collaborative)(encoded.to_list())
            stage = "hybrid" if collaborative else "text"
            rows[name][f"{stage}_step_s"] = step_seconds(model, batch)
            if name == PROFILED and not collaborative:
                rows[name]["text_step_op_shares"] = op_shares(model, batch)
            if name == DEFAULT and collaborative:  # the second stage before the autocast fix (README Notes)
                rows[name]["hybrid_step_s_without_autocast"] = step_seconds(model, batch, autocast=False)
        row = rows[name]
        print(f"{name:<22} text {row['text_step_s']:.2f} s/step  hybrid {row['hybrid_step_s']:.2f} s/step", flush=True)
    print("op shares of a text step,", PROFILED, {op: round(share, 3) for op, share in
                                                  rows[PROFILED]["text_step_op_shares"].items()})
    write_json(cli.out, {"threads": torch.get_num_threads(), "batch": training_args.per_device_train_batch_size,
                         "rows": rows})
    print(f"-> {cli.out}")


if __name__ == "__main__":
    main()
