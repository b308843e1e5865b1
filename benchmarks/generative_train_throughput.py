"""Training speed of the generative SFT path (issue 13): is a step limited by the GPU or by launching kernels?

    python benchmarks/generative_train_throughput.py --data ../shared/data/amazon14-beauty [--profile]

The path of ``benchmarks/generative_beauty.py``'s SID rows (``build_generative_model`` + ``GenerativeSFTTrainer``:
LoRA r=8 on q/k/v/o, trainable code-token rows, bf16, completion-only loss) on Amazon Beauty next-SID prompts
(histories of up to 20 items as codes, ~112 tokens an example). The semantic IDs are random codes (3 x 256
residual k-means of Gaussian vectors): only the prompt shapes matter here, and no text embeddings are needed.
Rows: the default (32 examples a step), LoRA dropout 0, and 128 examples a step. A step's time is the median
wall time between ``on_step_end`` callbacks after 10 warm-up steps, with a CUDA synchronize at each; if it
barely grows with the batch, the step is bound by kernel launches and Python, not by the GPU.
``--profile`` adds, for the default row, ``torch.profiler`` (CPU + CUDA) over 5 steps: kernel launches, matmuls,
dtype copies and GPU busy time per step, and the profiler's table.
Writes ``benchmarks/results/generative_train_throughput.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback
from trl import SFTConfig

from llmrec_ft.data import DataConfig, prepare_dataset
from llmrec_ft.generative.examples import ExampleConfig, GenerativeExamples
from llmrec_ft.generative.semantic_ids import build_semantic_ids
from llmrec_ft.generative.tokens import code_tokens
from llmrec_ft.generative.training import GenerativeModelArgs, GenerativeSFTTrainer, build_generative_model
from llmrec_ft.io import write_json
from llmrec_ft.llm.backbone import EMBEDDED_MODEL

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"default (batch 32, LoRA dropout 0.05)": dict(batch=32, steps=60, lora_dropout=0.05),
        "LoRA dropout 0": dict(batch=32, steps=60, lora_dropout=0.0),
        "batch 128": dict(batch=128, steps=40, lora_dropout=0.05)}


class StepClock(TrainerCallback):
    """Wall time at the end of every optimizer step, after the GPU has finished it."""

    def __init__(self):
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def measure(ds, sids, model_name: str, batch: int, steps: int, lora_dropout: float, profile: bool) -> dict:
    model, tokenizer, code_ids = build_generative_model(
        GenerativeModelArgs(model_name_or_path=model_name, dtype="bfloat16", lora_dropout=lora_dropout), sids)
    examples = GenerativeExamples(tokenizer, ds["items"]["title"],
                                  ExampleConfig(task="next_sid", history_format="codes", max_history=20,
                                                max_train_examples=batch * steps),
                                  ["".join(t) for t in code_tokens(sids)], code_ids)
    train = examples.training_dataset(ds)
    clock = StepClock()
    args = SFTConfig(output_dir="/tmp/generative_train_throughput", max_steps=steps, per_device_train_batch_size=batch,
                     learning_rate=1e-3, logging_steps=10**6, save_strategy="no", report_to=[], bf16=True,
                     disable_tqdm=True, dataloader_num_workers=0, completion_only_loss=True, padding_free=False)
    trainer = GenerativeSFTTrainer(model=model.cuda(), args=args, train_dataset=train, processing_class=tokenizer,
                                   callbacks=[clock])
    profiled = None
    if profile:
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=activities,
                                    schedule=torch.profiler.schedule(wait=steps - 10, warmup=5, active=5)) as prof:
            trainer.add_callback(type("ProfilerStep", (TrainerCallback,),
                                      {"on_step_end": lambda self, *a, **k: prof.step()})())
            trainer.train()
        profiled = profile_summary(prof, steps=5)
    else:
        trainer.train()
    step_s = float(np.median(np.diff(clock.times[10:])))
    return {"batch": batch, "lora_dropout": lora_dropout, "median_step_ms": 1000 * step_s,
            "examples_per_s": batch / step_s,
            "mean_tokens_per_example": float(np.mean([len(ids) for ids in train["input_ids"]])),
            "profile": profiled}


def profile_summary(prof, steps: int) -> dict:
    """Per-step counts that say what bounds a step (kernel launches, matmuls, dtype copies, GPU busy time) and
    the profiler's table, from ``steps`` profiled steps."""
    averages = prof.key_averages()
    count = {event.key: event.count for event in averages}
    return {"steps_profiled": steps,
            "kernel_launches_per_step": (count.get("cudaLaunchKernel", 0) + count.get("cuLaunchKernelEx", 0)) / steps,
            "aten_mm_per_step": count.get("aten::mm", 0) / steps,
            "aten_to_copy_per_step": count.get("aten::_to_copy", 0) / steps,
            "gpu_busy_ms_per_step": sum(event.self_device_time_total for event in averages) / 1000 / steps,
            "table": averages.table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=50)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "amazon14-beauty")
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "generative_train_throughput.json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU: the question is what limits a GPU step")
    ds = prepare_dataset(DataConfig(dataset="sequences", data_path=str(args.data / "sequences.txt"),
                                    item_path=str(args.data / "items.tsv")))
    vectors = np.random.default_rng(0).normal(size=(len(ds["items"]), 32)).astype("float32")
    sids = build_semantic_ids(vectors, 3, 256, "rkmeans", 0)
    rows = {}
    for name, row in ROWS.items():
        rows[name] = measure(ds, sids, args.model, **row, profile=args.profile and name.startswith("default"))
        print(f"{name:<40} {rows[name]['median_step_ms']:7.0f} ms/step {rows[name]['examples_per_s']:7.0f} examples/s")
        if rows[name]["profile"]:
            print(rows[name]["profile"]["table"])
    write_json(args.out, {"device": torch.cuda.get_device_name(0), "model": args.model, "rows": rows})
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
