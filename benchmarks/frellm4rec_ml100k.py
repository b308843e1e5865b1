"""FreLLM4Rec ablation on embedded ML-100K with a frozen SmolLM2-135M: SASRec, frozen LM, +G-LPF, +TFM, both.

    python benchmarks/frellm4rec_ml100k.py                 # CPU budget (the recipe config as is)
    python benchmarks/frellm4rec_ml100k.py --budget gpu    # more training, for a machine with a GPU

Every run goes through ``recipes/frellm4rec.py`` with ``recipes/configs/frellm4rec_ml100k.yaml``; only the
filters, seed and budget change. Per seed, one SASRec is trained (capped at the config's ``sasrec_epochs``,
early-stopped on valid NDCG@10) and shared by the four LM variants and both budgets (kept under
``<runs_dir>/seed<k>/sasrec``), so the variants differ only in the filters.
Full-ranking test metrics, mean and standard deviation over seeds, are printed as a markdown table and
merged under the budget's key into ``<results_dir>/frellm4rec_ml100k.json``; the layer-wise energy
diagnostic of the first seed's full model is copied to ``frellm4rec_ml100k_energy_<budget>.{png,json}``.
Results are written after every seed, so an interrupted run keeps the seeds it finished.

Budgets: ``cpu`` = 20 steps of 16 histories (the config). Measured on this repo's 2-core dev box while
other jobs ran (load ~3): SASRec (30 epochs) 161 s, the 20 steps 320 s (backprop through the 30 frozen
layers dominates), ranking the 943 test users 26 s; i.e. ~6 min per LM run and ~80 min for the whole
benchmark there, about half that on 2 idle cores. ``gpu`` = 200 steps of 128 histories (~0.26 epoch of the
97k transitions): 405 s for everything on one H100. CPU and CUDA draw different random numbers, so the
same seed gives somewhat different models on each (seed 0 on the CPU: SASRec NDCG@10 0.091, full model
0.044; on the H100: 0.105 and 0.041).
"""

from __future__ import annotations

import argparse
import json
import runpy
import shutil
import statistics
import time
from pathlib import Path

import torch
from transformers import TrainingArguments
from trl import TrlParser

from llmrec_ft.data import DataConfig
from llmrec_ft.io import atomic_path, write_json

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "frellm4rec_ml100k.yaml"
RECIPE = runpy.run_path(str(ROOT / "recipes" / "frellm4rec.py"))  # not "__main__": defines, runs nothing
VARIANTS = {"frozen LM": ["--glpf", "false", "--tfm", "false"], "+G-LPF": ["--glpf", "true", "--tfm", "false"],
            "+TFM": ["--glpf", "false", "--tfm", "true"], "+G-LPF +TFM": ["--glpf", "true", "--tfm", "true"]}
BUDGETS = {"cpu": [], "gpu": ["--max_steps", "200", "--per_device_train_batch_size", "128"]}
METRICS = ("ndcg@10", "hr@10", "ndcg@20", "hr@20")


def run_recipe(argv: list[str]) -> dict:
    parser = TrlParser((RECIPE["FreLLM4RecArgs"], DataConfig, TrainingArguments))
    return RECIPE["main"](*parser.parse_args_and_config(["--config", str(CONFIG), *argv]))


def summarize(per_seed: list[dict]) -> dict:
    out = {}
    for name in METRICS:
        values = [metrics[name] for metrics in per_seed]
        out[name] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                     "per_seed": values}
    return out


def markdown(table: dict, budget: str, num_seeds: int) -> str:
    lines = [f"FreLLM4Rec ablation, ML-100K full ranking (test), SmolLM2-135M frozen, budget={budget}, "
             f"mean ± std over {num_seeds} seeds", "",
             "| model | " + " | ".join(name.upper() for name in METRICS) + " |",
             "|---|" + "---|" * len(METRICS)]
    for model, metrics in table.items():
        cells = [f"{metrics[name]['mean']:.4f} ± {metrics[name]['std']:.4f}" for name in METRICS]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs_dir", default=str(ROOT / "runs" / "bench_frellm4rec_ml100k"))
    parser.add_argument("--results_dir", default=str(ROOT / "benchmarks" / "results"))
    cli = parser.parse_args()
    runs, results = Path(cli.runs_dir) / cli.budget, Path(cli.results_dir)
    start = time.perf_counter()
    per_model: dict[str, list[dict]] = {"SASRec": [], **{variant: [] for variant in VARIANTS}}
    timings: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    for seed in cli.seeds:
        # One SASRec per seed, shared by every variant and budget: trained by the first run that needs it.
        sasrec_dir = Path(cli.runs_dir) / f"seed{seed}" / "sasrec"
        if sasrec_dir.joinpath("metrics.json").exists():
            per_model["SASRec"].append(json.loads(sasrec_dir.joinpath("metrics.json").read_text())["test"]["all"])
        for variant, flags in VARIANTS.items():
            output_dir = runs / f"seed{seed}" / variant.replace(" ", "_").replace("+", "plus_")
            energy = seed == cli.seeds[0] and variant == "+G-LPF +TFM"
            argv = [*flags, *BUDGETS[cli.budget], "--seed", str(seed), "--output_dir", str(output_dir),
                    "--energy_users", "128" if energy else "0"]
            trained_here = not sasrec_dir.joinpath("metrics.json").exists()
            metrics = run_recipe(argv + ([] if trained_here else ["--sasrec_checkpoint", str(sasrec_dir)]))
            if trained_here:
                shutil.copytree(output_dir / "sasrec", sasrec_dir, ignore=shutil.ignore_patterns("checkpoints"))
                per_model["SASRec"].append(metrics["sasrec_test"]["all"])
            per_model[variant].append(metrics["test"]["all"])
            timings[variant].append(metrics["timings"])
            if energy:
                with atomic_path(results / f"frellm4rec_ml100k_energy_{cli.budget}.png") as tmp:
                    shutil.copy(output_dir / "energy.png", tmp)
                write_json(results / f"frellm4rec_ml100k_energy_{cli.budget}.json",
                           json.loads((output_dir / "energy.json").read_text()))
        write_results(results, cli.budget, cli.seeds, per_model, timings, time.perf_counter() - start)  # each seed


def write_results(results: Path, budget: str, seeds: list[int], per_model: dict, timings: dict, wall_s: float) -> None:
    seeds_done = len(per_model["+G-LPF +TFM"])
    table = {model: summarize(values[:seeds_done]) for model, values in per_model.items()}
    report = markdown(table, budget, seeds_done)
    print(report)
    path = results / "frellm4rec_ml100k.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged[budget] = {"seeds": seeds[:seeds_done], "table": table, "timings_s": timings, "markdown": report,
                      "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                      "wall_s": round(wall_s, 1)}
    write_json(path, merged)


if __name__ == "__main__":
    main()
