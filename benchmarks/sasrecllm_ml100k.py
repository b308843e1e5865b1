"""SASRecLLM on embedded ML-100K: AUC warm/cold and sampled HR/NDCG@10 for SASRec, text-only LoRA (TALLRec)
and SASRecLLM under each schedule, with the time each took.

    python benchmarks/sasrecllm_ml100k.py                                   # GPU budget (sasrecllm_ml100k_gpu.yaml)
    python benchmarks/sasrecllm_ml100k.py --config recipes/configs/sasrecllm_ml100k.yaml   # CPU-sized budget

Every model is trained by the real recipes in fresh processes, exactly as a user runs them:

1. ``recipes/sasrec.py`` twice (seeds 0 and 1): SASRec A, and SASRec B standing in for "SASRec retrained on
   new interactions" (a different embedding space the projector was never trained on);
2. ``recipes/sasrecllm.py --schedule dual_stage`` on SASRec A -> SASRec-alone rows, text-only LoRA, dual-stage;
3. ``--schedule hierarchical`` on SASRec A;
4. ``--schedule plug_and_play`` with the dual-stage LoRA + projector and SASRec B (projector tuned only).

A run whose ``metrics.json`` exists is reused, so the benchmark can be continued across sessions. Prints a
markdown table and writes ``benchmarks/results/sasrecllm_ml100k.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from llmrec_ft.io import write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "sasrecllm_ml100k.json"
COLUMNS = ("auc_warm", "auc_cold", "auc_all", "hr@10", "ndcg@10")


def run(command: list[str], log: Path) -> float:
    """Run one recipe, teeing its output to ``log``; returns wall seconds."""
    start = time.perf_counter()
    with open(log, "w") as handle:
        result = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}); see {log}")
    return time.perf_counter() - start


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({platform.processor() or 'unknown'})"


def sasrec(output_dir: Path, seed: int, epochs: float) -> tuple[Path, float]:
    """Train (or reuse) a SASRec checkpoint; returns it and the wall seconds its training took."""
    timing = output_dir / "benchmark_timing.json"
    if not timing.exists():
        seconds = run([sys.executable, "recipes/sasrec.py", "--config", "recipes/configs/sasrec_ml100k.yaml",
                       "--output_dir", str(output_dir), "--seed", str(seed), "--num_train_epochs", str(epochs),
                       "--disable_tqdm", "true", "--report_to", "none"], output_dir.with_suffix(".log"))
        write_json(timing, {"wall_seconds": seconds, "device": device_name()})
    return output_dir, json.loads(timing.read_text())["wall_seconds"]


def sasrecllm(config: str, output_dir: Path, extra: list[str]) -> dict:
    if not (output_dir / "metrics.json").exists():
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        wall = run([sys.executable, "recipes/sasrecllm.py", "--config", config, "--output_dir", str(output_dir),
                    "--disable_tqdm", "true", *extra], output_dir.with_suffix(".log"))
        metrics = json.loads((output_dir / "metrics.json").read_text())
        metrics["wall_seconds"] = wall
        metrics["device"] = device_name()
        write_json(output_dir / "metrics.json", metrics)
    return json.loads((output_dir / "metrics.json").read_text())


def row(name: str, metrics: dict, train_seconds: float | None, eval_seconds: float | None) -> dict:
    return {"model": name, **{key: metrics.get(key) for key in COLUMNS}, "n_warm": metrics.get("n_warm"),
            "n_cold": metrics.get("n_cold"), "train_seconds": train_seconds, "eval_seconds": eval_seconds}


def markdown(rows: list[dict]) -> str:
    def cell(value, digits=4):
        return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    lines = ["| model | AUC warm | AUC cold | AUC all | HR@10 | NDCG@10 | train s | eval s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | " + " | ".join(cell(r[k]) for k in COLUMNS)
                     + f" | {cell(r['train_seconds'], 1)} | {cell(r['eval_seconds'], 1)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="recipes/configs/sasrecllm_ml100k_gpu.yaml")
    parser.add_argument("--output_dir", default="runs/bench_sasrecllm")
    parser.add_argument("--results", default=str(RESULTS), help="Where the JSON goes.")
    parser.add_argument("--sasrec_epochs", type=float, default=200, help="Upper bound; SASRec early-stops.")
    parser.add_argument("--skip", nargs="*", default=[], choices=["hierarchical", "plug_and_play"],
                        help="Runs to leave out this time (e.g. to split the benchmark across machines' time limits).")
    args, extra = parser.parse_known_args()
    out = Path(args.output_dir)
    wanted = {"hierarchical", "plug_and_play"} - set(args.skip)
    out.mkdir(parents=True, exist_ok=True)

    sasrec_a, seconds_a = sasrec(out / "sasrec_a", 0, args.sasrec_epochs)
    timings = {"sasrec_a": seconds_a}
    if "plug_and_play" in wanted:
        sasrec_b, timings["sasrec_b"] = sasrec(out / "sasrec_b", 1, args.sasrec_epochs)
    runs = {"dual_stage": sasrecllm(args.config, out / "dual_stage",
                                    ["--schedule", "dual_stage", "--sasrec_checkpoint", str(sasrec_a), *extra])}
    if "hierarchical" in wanted:
        runs["hierarchical"] = sasrecllm(args.config, out / "hierarchical",
                                         ["--schedule", "hierarchical", "--sasrec_checkpoint", str(sasrec_a), *extra])
    if "plug_and_play" in wanted:
        runs["plug_and_play"] = sasrecllm(args.config, out / "plug_and_play",
                                          ["--schedule", "plug_and_play", "--sasrec_checkpoint", str(sasrec_b),
                                           "--pretrained_hybrid", str(out / "dual_stage" / "artifacts"), *extra])

    dual = runs["dual_stage"]
    rows = [row("SASRec (next-item score)", dual["sasrec"]["next_item"], timings["sasrec_a"], None),
            row("SASRec + logistic head", dual["sasrec"]["classifier"], timings["sasrec_a"], None),
            row("Text-only LoRA (TALLRec)", dual["text_only_lora"], dual["timings_s"]["text_stage"],
                dual["text_only_lora"]["eval_seconds"])]
    for schedule, metrics in runs.items():
        train = sum(v for k, v in metrics["timings_s"].items() if k != "sasrec_pretrain")
        rows.append(row(f"SASRecLLM {schedule.replace('_', '-')}", metrics["sasrecllm"], train,
                        metrics["sasrecllm"]["eval_seconds"]))
    table = markdown(rows)
    print(table)
    write_json(args.results, {"config": args.config, "overrides": extra, "device": dual.get("device", device_name()),
                              "rows": rows, "samples": dual["samples"], "sasrec_seconds": timings, "markdown": table,
                              "runs": runs})


if __name__ == "__main__":
    main()
