"""The SASRecLLM recipe on several GPUs under each accelerate config, against one GPU (GitHub issue 8).

    python benchmarks/multi_gpu.py --configs ddp deepspeed_zero2 deepspeed_zero3 fsdp --gpus 2
    python benchmarks/multi_gpu.py --cpu --shape tiny --configs ddp      # the harness itself, 2 CPU processes
    python benchmarks/multi_gpu.py --resume_check --configs deepspeed_zero2 fsdp --gpus 2 --shape qwen2.5-0.5b
    python benchmarks/multi_gpu.py --recipe generative --configs ddp --gpus 2 --shape qwen2.5-0.5b

What runs: ``recipes/sasrecllm.py`` with ``recipes/configs/sasrecllm_ml100k_gpu.yaml`` and, on the command
line, a random-initialised real shape (Qwen2.5-7B by default, written once to ``--model_dir`` with the embedded
tokenizer), LoRA r=16 on all linear layers, bf16 weights, padding-free batches with ``llmrec_varlen``
attention, the hierarchical schedule (one hybrid stage, so the timed stage is the whole run), ``--max_steps``
steps. Each accelerate config launches ``--gpus`` processes; the baseline is the same recipe on one GPU
with ``gradient_accumulation_steps = --gpus``, i.e. the same global batches in the same order (accelerate
shards each global batch across the processes), so the per-step losses must agree within bf16 noise.

Reported per config: tokens/s in total and per GPU (``num_input_tokens_seen`` over ``train_runtime``, both
from Trainer's own ``trainer_state.json``, after ``--warmup_steps``; see ``steady_tokens_per_s``), the scaling efficiency
``tokens/s(N GPUs) / (N * tokens/s(1 GPU))``, peak memory per GPU (``nvidia-smi`` polled every 0.5 s:
allocator caches included) and the largest per-step loss difference to the 1-GPU run.

``--resume_check`` asks a different question: does ``--resume_from_checkpoint true`` continue a killed run
exactly? Per config it trains once uninterrupted, once killed (SIGKILL to the whole process group, as a
pre-empted job dies) right after the mid-way checkpoint is complete, and once resumed from it; it reports the
largest per-step loss difference after the checkpoint and the largest difference of the final test metrics
between the resumed and the uninterrupted run (``benchmarks/results/multi_gpu_resume.json``).

``--recipe generative`` runs ``recipes/generative.py`` with ``recipes/configs/generative_ml100k.yaml`` instead
(next-SID SFT on the embedded ML-100K, semantic IDs from the random shape's own text embeddings, LoRA on all
linear layers, bf16, padded batches whose pad tokens count in tokens/s; ``--eval_users`` test users decoded by
constrained beam search, sharded over the processes). Besides the training rows it reports evaluation scaling
and exactness: the 1-GPU run's artifacts are re-evaluated by ``llmrec_ft.cli evaluate`` on 1 and on ``--gpus``
processes, and the two top-K lists and metrics must be identical (``benchmarks/results/multi_gpu_generative.json``).

``--cpu`` swaps ``accelerate launch`` for ``torchrun`` (accelerate starts several CPU processes only through
mpirun) so the harness can be checked without GPUs; throughput numbers from it mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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
PROTOCOLS = ("exclude_history", "include_history")
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


def recipe_command(args, config: str | None, output: Path, save_steps: int = 10**9, resume: bool = False) -> list[str]:
    common = ["--config", str(ROOT / args.recipe_config), "--output_dir", str(output),
              "--model_name_or_path", str(args.model_dir), "--dtype", "bfloat16", "--max_steps", str(args.max_steps),
              "--per_device_train_batch_size", str(args.batch_size),
              "--gradient_accumulation_steps", str(args.gpus if config is None else 1),
              "--lora_r", "16", "--lora_alpha", "32", "--lora_dropout", "0", "--lora_target_modules", "all-linear",
              "--logging_steps", "1", "--disable_tqdm", "true", "--report_to", "none"]
    if args.recipe == "generative":
        recipe = [str(ROOT / "recipes" / "generative.py"), *common, "--bf16", "true",
                  "--include_num_input_tokens_seen", "true", "--save_strategy", "no",  # pads counted
                  "--max_train_examples", str(args.max_steps * args.batch_size * args.gpus),
                  "--eval_users", str(args.eval_users), "--eval_batch_size", str(args.eval_batch_size),
                  *args.recipe_args]
    else:
        recipe = [str(ROOT / "recipes" / "sasrecllm.py"), *common,
                  "--schedule", "hierarchical", "--projector_from_step", "0", "--collab_from_step", str(10**9),
                  "--padding_free", "true", "--attn_implementation", "llmrec_varlen" if not args.cpu else "sdpa",
                  "--include_num_input_tokens_seen", "true",  # packed rows: no pads counted
                  "--save_steps", str(save_steps), "--resume_from_checkpoint", str(resume).lower(),
                  "--max_eval_samples", "8", "--ranking_users", "2", "--sasrec_checkpoint", str(args.sasrec),
                  *args.recipe_args]
    if args.cpu:
        recipe += ["--use_cpu", "true", "--bf16", "false", "--dtype", "float32"]
    return launch(args, 1 if config is None else args.gpus, config, recipe)


def launch(args, processes: int, config: str | None, script: list[str]) -> list[str]:
    """``accelerate launch`` (``torchrun`` with ``--cpu``) of ``script`` (a path or ``-m module``, then its args)."""
    if args.cpu:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                *script]
    accelerate = ["--config_file", str(ROOT / "accelerate_configs" / f"{config or 'single_gpu'}.yaml"),
                  "--num_processes", str(processes)]
    return [sys.executable, "-m", "accelerate.commands.launch", *accelerate, *script]


def state_dir(args, output: Path) -> Path:
    """Where the trained stage's ``trainer_state.json`` is."""
    return output if args.recipe == "generative" else output / "hybrid_stage"


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


def launch_env(args) -> dict:
    return {**os.environ, **NO_MULTICAST, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "true" if args.cpu else "false",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def trained_losses(output: Path) -> dict[int, float]:
    """Per-step training loss of the hybrid stage, keyed by global step (``trainer_state.json``)."""
    state = json.loads((output / "hybrid_stage" / "trainer_state.json").read_text())
    return {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}


def flat_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Every number in ``metrics.json`` under a dotted key (timings left out: they differ by design)."""
    out = {}
    for key, value in metrics.items():
        if key == "timings_s" or key.endswith("seconds"):
            continue
        if isinstance(value, dict):
            out.update(flat_metrics(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def run_killed_at_checkpoint(args, config: str, output: Path, step: int) -> None:
    """Start the recipe, wait until ``checkpoint-<step>`` is complete on disk, then SIGKILL every process."""
    checkpoint = output / "hybrid_stage" / f"checkpoint-{step}"
    process = subprocess.Popen(recipe_command(args, config, output, save_steps=step), cwd=ROOT,
                               env=launch_env(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    # Trainer writes trainer_state.json after the weights, optimizer and RNG states of a checkpoint.
    while process.poll() is None and not (checkpoint / "trainer_state.json").exists():
        time.sleep(0.2)
    time.sleep(2.0)
    if process.poll() is not None:
        raise RuntimeError(f"{config}: the run ended (rc {process.returncode}) before it could be killed")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def resume_check(args, config: str) -> dict:
    half = args.max_steps // 2
    work = args.work_dir / f"resume_{config}"
    runs = {}
    for name in ("uninterrupted", "resumed"):
        output = work / name
        if name == "resumed":
            run_killed_at_checkpoint(args, config, output, half)
        result = subprocess.run(recipe_command(args, config, output, save_steps=half, resume=name == "resumed"),
                                cwd=ROOT, capture_output=True, text=True, env=launch_env(args))
        (work / f"{name}.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            return {"config": config, "error": f"{name} run failed, see {work / name}.log"}
        runs[name] = (trained_losses(output), flat_metrics(json.loads((output / "metrics.json").read_text())))
    (full_losses, full_metrics), (resumed_losses, resumed_metrics) = runs["uninterrupted"], runs["resumed"]
    after = [step for step in full_losses if step > half]
    return {"config": config, "processes": args.gpus, "killed_after_step": half, "steps": args.max_steps,
            "max_loss_diff_after_resume": max(abs(full_losses[s] - resumed_losses[s]) for s in after),
            "max_metric_diff": max(abs(full_metrics[k] - resumed_metrics[k]) for k in full_metrics),
            "final_loss": [full_losses[max(after)], resumed_losses[max(after)]],
            "metrics_compared": len(full_metrics)}


def run(args, config: str | None) -> dict:
    name = config or "1 GPU"
    output = args.work_dir / (config or "single")
    poller = PeakGpuMemory() if not args.cpu else None
    if poller:
        poller.start()
    start = time.perf_counter()
    result = subprocess.run(recipe_command(args, config, output), cwd=ROOT, capture_output=True, text=True,
                            env=launch_env(args))
    if poller:
        poller.done.set()
        poller.join()
    (args.work_dir / f"{config or 'single'}.log").write_text(result.stdout + result.stderr)
    row = {"config": name, "processes": 1 if config is None else args.gpus, "wall_s": time.perf_counter() - start}
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        return {**row, "error": (errors[0] if errors else "failed, see the log")[:300]}
    state = json.loads((state_dir(args, output) / "trainer_state.json").read_text())
    logs = state["log_history"]
    summary = next(entry for entry in logs if "train_loss" in entry)
    row.update(losses=[entry["loss"] for entry in logs if "loss" in entry],
               tokens=state["num_input_tokens_seen"], train_runtime_s=summary["train_runtime"],
               peak_gib_per_gpu=[mib / 1024 for mib in poller.peak_mib][:row["processes"]] if poller else None)
    row["tokens_per_s"] = steady_tokens_per_s(logs, args.warmup_steps)
    row["tokens_per_s_per_gpu"] = row["tokens_per_s"] / row["processes"]
    if args.recipe == "generative":  # the recipe's own (sharded) evaluation of what it trained
        metrics = json.loads((output / "metrics.json").read_text())
        row.update(eval_s=metrics["timings_s"]["eval_test"], test={p: metrics["test"][p] for p in PROTOCOLS})
    return row


def evaluation_check(args) -> dict:
    """The 1-GPU run's artifacts evaluated by ``llmrec_ft.cli evaluate`` on 1 and on ``--gpus`` processes (DDP
    launch): decoding seconds of each and whether the top-K lists and metrics are identical."""
    results = {}
    for processes in (1, args.gpus):
        out = args.work_dir / f"evaluate_{processes}.json"
        script = ["-m", "llmrec_ft.cli", "evaluate", "--model", str(args.work_dir / "single" / "artifacts"),
                  "--out", str(out), *(["--device", "cpu"] if args.cpu else [])]
        result = subprocess.run(launch(args, processes, "ddp" if processes > 1 else None, script), cwd=ROOT,
                                capture_output=True, text=True, env=launch_env(args))
        (args.work_dir / f"evaluate_{processes}.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            return {"error": f"evaluate on {processes} processes failed, see {args.work_dir}/evaluate_{processes}.log"}
        results[processes] = json.loads(out.read_text())
    one, many = results[1], results[args.gpus]
    return {"processes": [1, args.gpus], "users": one["num_users"], "users_per_process": many["users_per_process"],
            "eval_s": [one["eval_seconds"], many["eval_seconds"]],
            "identical_top_k": one["top_k"] == many["top_k"],
            "identical_metrics": all(one[p] == many[p] for p in PROTOCOLS), "metrics": {p: one[p] for p in PROTOCOLS}}


def steady_tokens_per_s(logs: list[dict], warmup_steps: int) -> float:
    """Tokens/s between the end of step ``warmup_steps`` and the last step.

    transformers 5 logs the cumulative ``train_runtime`` and ``num_input_tokens_seen`` with every loss, so the
    first steps (kernel selection, allocator growth) and the end of training (under DeepSpeed, tens of seconds
    after the last step) stay out of the figure; the summary's ``train_runtime`` includes both.
    """
    steps = [entry for entry in logs if "loss" in entry and "train_runtime" in entry]
    if len(steps) <= warmup_steps + 1:
        raise ValueError(f"{len(steps)} logged steps: need more than --warmup_steps={warmup_steps} + 1")
    first, last = steps[warmup_steps], steps[-1]
    return (last["num_input_tokens_seen"] - first["num_input_tokens_seen"]) / (
        float(last["train_runtime"]) - float(first["train_runtime"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp"])
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--shape", default="qwen2.5-7b")
    parser.add_argument("--model_dir", type=Path, default=None, help="default: <work_dir>/<shape>")
    parser.add_argument("--recipe", choices=["sasrecllm", "generative"], default="sasrecllm")
    parser.add_argument("--sasrec", type=Path, default=None,
                        help="a SASRec checkpoint (recipes/sasrec.py); --recipe sasrecllm")
    parser.add_argument("--max_steps", type=int, default=30)
    parser.add_argument("--warmup_steps", type=int, default=5, help="steps left out of tokens/s")
    parser.add_argument("--batch_size", type=int, default=8, help="prompts per GPU per step")
    parser.add_argument("--recipe_config", default=None,
                        help="default: recipes/configs/sasrecllm_ml100k_gpu.yaml | generative_ml100k.yaml")
    parser.add_argument("--eval_users", type=int, default=256, help="generative: test users decoded")
    parser.add_argument("--eval_batch_size", type=int, default=32, help="generative: users per beam-search batch")
    parser.add_argument("--recipe_args", nargs=argparse.REMAINDER, default=[], help="extra recipe overrides")
    parser.add_argument("--work_dir", type=Path, default=Path("runs/multi_gpu"))
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results/multi_gpu[_generative].json")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--resume_check", action="store_true", help="kill mid-way, resume, compare (see above)")
    args = parser.parse_args()
    generative = args.recipe == "generative"
    if args.recipe == "sasrecllm" and args.sasrec is None:
        parser.error("--recipe sasrecllm needs --sasrec")
    if generative and args.resume_check:
        parser.error("--resume_check is implemented for --recipe sasrecllm only")
    args.recipe_config = args.recipe_config or ("recipes/configs/generative_ml100k.yaml" if generative
                                                else "recipes/configs/sasrecllm_ml100k_gpu.yaml")
    args.out = args.out or Path(f"benchmarks/results/multi_gpu{'_generative' if generative else ''}.json")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    args.model_dir = write_random_model(args.shape, args.model_dir or args.work_dir / args.shape)
    if args.resume_check:
        rows = []
        for config in args.configs:
            rows.append(resume_check(args, config))
            write_json(args.out.with_name("multi_gpu_resume.json"), {"shape": args.shape, "rows": rows})
        print("\n| config | GPUs | killed after step | steps | max loss diff after resume | max metric diff | final loss (full, resumed) |")
        print("|---|---|---|---|---|---|---|")
        for row in rows:
            if "error" in row:
                print(f"| {row['config']} | {row['error']} | | | | | |")
                continue
            print(f"| {row['config']} | {row['processes']} | {row['killed_after_step']} | {row['steps']} | "
                  f"{row['max_loss_diff_after_resume']:.4f} | {row['max_metric_diff']:.4f} | "
                  f"{row['final_loss'][0]:.4f}, {row['final_loss'][1]:.4f} |")
        return

    rows = [run(args, None)]
    for config in args.configs:
        rows.append(run(args, config))
        write_json(args.out, {"recipe": args.recipe, "shape": args.shape, "gpus": args.gpus,
                              "max_steps": args.max_steps, "rows": rows})
    check = evaluation_check(args) if generative and "error" not in rows[0] else None
    if check is not None:
        write_json(args.out, {"recipe": args.recipe, "shape": args.shape, "gpus": args.gpus,
                              "max_steps": args.max_steps, "rows": rows, "evaluation_check": check})
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
    if generative:
        print("\n| config | GPUs | recipe eval s | test HR@10 (excl. history) |")
        print("|---|---|---|---|")
        for row in rows:
            if "error" not in row:
                print(f"| {row['config']} | {row['processes']} | {row['eval_s']:.1f} | "
                      f"{row['test']['exclude_history']['hr@10']:.4f} |")
    if check is not None and "error" in check:
        print(f"\nevaluation check: {check['error']}")
    elif check is not None:
        print(f"\nsame artifacts, llmrec_ft.cli evaluate, {check['users']} users: "
              f"1 process {check['eval_s'][0]:.1f} s, "
              f"{args.gpus} processes {check['eval_s'][1]:.1f} s ({check['eval_s'][0] / check['eval_s'][1]:.2f}x, "
              f"users per process {check['users_per_process']}); identical top-K: {check['identical_top_k']}, "
              f"identical metrics: {check['identical_metrics']}")


if __name__ == "__main__":
    main()
