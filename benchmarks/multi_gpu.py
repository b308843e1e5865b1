"""The SASRecLLM recipe on several GPUs under each accelerate config, against one GPU (GitHub issue 8).

    python benchmarks/multi_gpu.py --configs ddp deepspeed_zero2 deepspeed_zero3 fsdp --gpus 2
    python benchmarks/multi_gpu.py --cpu --shape tiny --configs ddp      # the harness itself, 2 CPU processes

What runs: ``recipes/sasrecllm.py`` with ``recipes/configs/sasrecllm_ml100k_gpu.yaml`` and, on the command
line, a random-initialised real shape (Qwen2.5-7B by default, written once to ``--model_dir`` with the embedded
tokenizer), LoRA r=16 on all linear layers, bf16 weights, padding-free batches with ``llmrec_varlen``
attention, the hierarchical schedule (one hybrid stage, so the timed stage is the whole run), ``--max_steps``
steps. Each accelerate config launches ``--gpus`` processes; the baseline is the same recipe on one GPU
with ``gradient_accumulation_steps = --gpus``, i.e. the same global batches in the same order (accelerate
shards each global batch across the processes), so the per-step losses must agree within bf16 noise.

Reported per config: tokens/s in total and per GPU (``num_input_tokens_seen`` over the stage's
``train_runtime``, both from Trainer's own ``trainer_state.json``), the scaling efficiency
``tokens/s(N GPUs) / (N * tokens/s(1 GPU))``, peak memory per GPU (``nvidia-smi`` polled every 0.5 s:
allocator caches included) and the largest per-step loss difference to the 1-GPU run.

``--cpu`` swaps ``accelerate launch`` for ``torchrun`` (accelerate starts several CPU processes only through
mpirun) so the harness can be checked without GPUs; throughput numbers from it mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmrec_ft.io import atomic_path, write_json
from llmrec_ft.llm.backbone import embedded_model_dir

from train_throughput import model_config  # noqa: E402  (same shapes as the single-GPU benchmark)

ROOT = Path(__file__).resolve().parents[1]
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def write_random_model(shape: str, directory: Path) -> Path:
    """A loadable checkpoint of ``shape`` with random bf16 weights and the embedded model's tokenizer."""
    if (directory / "config.json").exists():
        return directory
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    config = model_config(shape)
    config.vocab_size = max(config.vocab_size, len(tokenizer))  # the tiny CPU shape borrows a bigger tokenizer
    config.use_cache = True
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    with atomic_path(directory) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return directory


def recipe_command(args, config: str | None, output: Path) -> list[str]:
    recipe = [str(ROOT / "recipes" / "sasrecllm.py"), "--config", str(ROOT / args.recipe_config),
              "--output_dir", str(output), "--model_name_or_path", str(args.model_dir), "--dtype", "bfloat16",
              "--schedule", "hierarchical", "--projector_from_step", "0", "--collab_from_step", str(10**9),
              "--max_steps", str(args.max_steps), "--per_device_train_batch_size", str(args.batch_size),
              "--gradient_accumulation_steps", str(args.gpus if config is None else 1),
              "--lora_r", "16", "--lora_alpha", "32", "--lora_dropout", "0", "--lora_target_modules", "all-linear",
              "--padding_free", "true", "--attn_implementation", "llmrec_varlen" if not args.cpu else "sdpa",
              "--include_num_input_tokens_seen", "true", "--logging_steps", "1",  # packed rows: no pads counted
              "--save_steps", str(10**9), "--max_eval_samples", "8", "--ranking_users", "2",
              "--sasrec_checkpoint", str(args.sasrec), "--disable_tqdm", "true", "--report_to", "none",
              *args.recipe_args]
    if args.cpu:
        processes = 1 if config is None else args.gpus
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                *recipe, "--use_cpu", "true", "--bf16", "false", "--dtype", "float32"]
    accelerate = ["--config_file", str(ROOT / "accelerate_configs" / f"{config or 'single_gpu'}.yaml"),
                  "--num_processes", str(1 if config is None else args.gpus)]
    return [sys.executable, "-m", "accelerate.commands.launch", *accelerate, *recipe]


class PeakGpuMemory(threading.Thread):
    """Polls ``nvidia-smi`` for the memory in use on every GPU; keeps the maximum of each."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_mib: list[int] = []
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True)
            used = [int(x) for x in out.stdout.split()] if out.returncode == 0 else []
            self.peak_mib = [max(a, b) for a, b in zip(used, self.peak_mib)] if self.peak_mib else used
            self.done.wait(0.5)


def run(args, config: str | None) -> dict:
    name = config or "1 GPU"
    output = args.work_dir / (config or "single")
    poller = PeakGpuMemory() if not args.cpu else None
    if poller:
        poller.start()
    start = time.perf_counter()
    result = subprocess.run(recipe_command(args, config, output), cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, **NO_MULTICAST, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU":
                                 "true" if args.cpu else "false"})
    if poller:
        poller.done.set()
        poller.join()
    (args.work_dir / f"{config or 'single'}.log").write_text(result.stdout + result.stderr)
    row = {"config": name, "processes": 1 if config is None else args.gpus, "wall_s": time.perf_counter() - start}
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        return {**row, "error": (errors[0] if errors else "failed, see the log")[:300]}
    state = json.loads((output / "hybrid_stage" / "trainer_state.json").read_text())
    logs = state["log_history"]
    summary = next(entry for entry in logs if "train_runtime" in entry)
    row.update(losses=[entry["loss"] for entry in logs if "loss" in entry],
               tokens=state["num_input_tokens_seen"], train_runtime_s=summary["train_runtime"],
               peak_gib_per_gpu=[mib / 1024 for mib in poller.peak_mib][:row["processes"]] if poller else None)
    row["tokens_per_s"] = row["tokens"] / row["train_runtime_s"]
    row["tokens_per_s_per_gpu"] = row["tokens_per_s"] / row["processes"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp"])
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--shape", default="qwen2.5-7b")
    parser.add_argument("--model_dir", type=Path, default=None, help="default: <work_dir>/<shape>")
    parser.add_argument("--sasrec", type=Path, required=True, help="a SASRec checkpoint (recipes/sasrec.py)")
    parser.add_argument("--max_steps", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=8, help="prompts per GPU per step")
    parser.add_argument("--recipe_config", default="recipes/configs/sasrecllm_ml100k_gpu.yaml")
    parser.add_argument("--recipe_args", nargs=argparse.REMAINDER, default=[], help="extra recipe overrides")
    parser.add_argument("--work_dir", type=Path, default=Path("runs/multi_gpu"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/multi_gpu.json"))
    parser.add_argument("--cpu", action="store_true")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    args.model_dir = write_random_model(args.shape, args.model_dir or args.work_dir / args.shape)

    rows = [run(args, None)]
    for config in args.configs:
        rows.append(run(args, config))
        write_json(args.out, {"shape": args.shape, "gpus": args.gpus, "max_steps": args.max_steps, "rows": rows})
    single = rows[0]
    print("\n| config | GPUs | tokens/s | tokens/s per GPU | scaling vs 1 GPU | peak GiB per GPU | max loss diff |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['config']} | {row['processes']} | {row['error']} | | | | |")
            continue
        scaling = row["tokens_per_s"] / single["tokens_per_s"] if "tokens_per_s" in single else float("nan")
        diff = max((abs(a - b) for a, b in zip(row["losses"], single.get("losses", []))), default=float("nan"))
        peak = ", ".join(f"{p:.1f}" for p in row["peak_gib_per_gpu"]) if row["peak_gib_per_gpu"] else "-"
        print(f"| {row['config']} | {row['processes']} | {row['tokens_per_s']:,.0f} | {row['tokens_per_s_per_gpu']:,.0f} | "
              f"{scaling:.2f}x | {peak} | {diff:.4f} |")


if __name__ == "__main__":
    main()
