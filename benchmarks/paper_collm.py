"""SASRecLLM on its paper's protocol: CoLLM's MovieLens-1M (AUC / UAUC on test, warm/cold), next to CoLLM's rows.

    python benchmarks/paper_collm.py --model qwen2.5-coder-1.5b-instruct   # one H200: 9-12 min a seed, shared
    python benchmarks/paper_collm.py --model smollm2-135m-instruct         # one H200, ~400 s (241 s + MF 154 s)
    python benchmarks/paper_collm.py --budget cpu --model smollm2-135m-instruct      # a tiny CPU check
    python benchmarks/paper_collm.py --budget gpu_valid --model qwen2.5-coder-1.5b-instruct   # the authors' schedule

Rows, all on the same data (``recipes/configs/sasrecllm_collm_paper.yaml`` explains the protocol):

* MF: CoLLM's MF baseline (``llmrec_ft/collab/mf.py``), BCE on the train labels, early-stopped on valid AUC;
* SASRec (next-item score) and SASRec + logistic head: our SASRec pre-trained on the users' liked training
  sequences, then its frozen features under a logistic regression fitted on the train labels (as the ML-100K
  benchmark does; ``llmrec_ft/train/scoring.py``);
* text-only LoRA (TALLRec-style): the dual-stage schedule's first stage, CoLLM's TALLRec prompt, BCE on Yes;
* SASRecLLM: the second stage, CoLLM's prompt with the user and candidate collaborative tokens.

Each seed is one run of ``recipes/sasrecllm.py`` in a fresh process (reused when its ``metrics.json``
exists; MF's per-seed metrics are kept beside them the same way, so seeds run on several machines or
processes go into one table by copying their folders together and calling again). Prints mean +- std over
seeds and writes ``benchmarks/results/paper_collm.json`` (atomically).
Published rows are CoLLM's Table (7B Vicuna backbone); they are quoted, not re-run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from llmrec_ft.collab.mf import MFTrainingConfig, fit_mf, predict
from llmrec_ft.data import DataConfig, prepare_dataset
from llmrec_ft.io import write_json

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "recipes/configs/sasrecllm_collm_paper.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "paper_collm.json"
PUBLISHED = [  # CoLLM (arXiv 2310.19488) on this split, Vicuna-7B: (AUC, UAUC) on the whole test set
    ("MF (CoLLM paper)", 0.6482, 0.6361), ("TALLRec (CoLLM paper, 7B)", 0.7097, 0.6818),
    ("CoLLM-SASRec (CoLLM paper, 7B)", 0.7235, 0.6990)]
# ../shared in a clone next to the team's shared folder, shared/ inside the repository on the GPU machine
SHARED_CANDIDATES = [base / "shared" / "data" / "collm-ml-1m" for base in (ROOT, ROOT.parent, ROOT.parent.parent)]
COLUMNS = ("auc_all", "uauc_all", "auc_warm", "uauc_warm", "auc_cold", "uauc_cold")
BUDGETS = {  # recipe overrides per budget; CLI knobs below override these
    # 400 steps x 32 rows per stage (12,800 of the 33,891 training rows, each seen once per stage), the whole
    # test set; 4 min a seed for SmolLM2 alone on one H200, 9-12 min for the 1.5B model on an H200 shared with
    # other runs; seeds are separate runs, so more seeds can go to more commands
    "gpu": {"max_steps": 400, "text_stage_max_steps": 400, "max_train_samples": 12800, "max_eval_samples": None,
            "per_device_train_batch_size": 32, "sasrec_epochs": 100},
    # the authors' schedule: every training row, up to 2 epochs per stage, valid AUC (2,000 valid rows) every 200
    # steps, each stage ending on its best checkpoint, early stopping after 3 evaluations without gain; not run
    # yet (an estimate: 1,059 steps an epoch; 15-25 min a seed for the 1.5B model on one H200)
    "gpu_valid": {"max_steps": -1, "text_stage_max_steps": -1, "num_train_epochs": 2, "max_train_samples": None,
                  "max_eval_samples": None, "max_valid_samples": 2000, "per_device_train_batch_size": 32,
                  "sasrec_epochs": 100, "eval_strategy": "steps", "eval_steps": 200, "save_steps": 200,
                  "load_best_model_at_end": "true", "metric_for_best_model": "auc", "early_stopping_patience": 3},
    "cpu": {"max_steps": 12, "text_stage_max_steps": 12, "max_train_samples": 96, "max_eval_samples": 150,
            "per_device_train_batch_size": 4, "sasrec_epochs": 5, "dtype": "float32", "bf16": "false",
            "use_cpu": "true", "per_device_eval_batch_size": 16},
}


def run_recipe(output_dir: Path, overrides: dict, extra: list[str]) -> dict:
    """One ``recipes/sasrecllm.py`` run (or its saved metrics); adds the wall seconds. ``extra``: more recipe
    arguments, passed as they are (after the budget's)."""
    metrics_path, args_path = output_dir / "metrics.json", output_dir.with_suffix(".args.json")
    args = [f"--{key}={value}" for key, value in overrides.items() if value is not None] + extra
    earlier = json.loads(args_path.read_text()) if metrics_path.exists() and args_path.exists() else args
    if earlier != args:
        raise SystemExit(f"{output_dir} was run with {earlier}, not {args}; choose another --output_dir")
    if not metrics_path.exists():
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        write_json(args_path, args)
        command = [sys.executable, "recipes/sasrecllm.py", "--config", CONFIG, "--output_dir", str(output_dir),
                   "--schedule", "dual_stage", "--disable_tqdm", "true", *args]
        start = time.perf_counter()
        with open(output_dir.with_suffix(".log"), "w") as log:
            result = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({result.returncode}); see {output_dir.with_suffix('.log')}")
        metrics = json.loads(metrics_path.read_text())
        metrics["wall_seconds"] = time.perf_counter() - start
        metrics["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
        write_json(metrics_path, metrics)
    return json.loads(metrics_path.read_text())


def mf_metrics(data_path: str, seed: int, max_eval_samples: int | None) -> dict:
    """CoLLM's MF baseline on the same test rows as the recipe (same caps, same seeded sampling)."""
    from llmrec_ft.train.pointwise_data import PointwiseConfig, build_pointwise_samples, warm_cold_test_sets
    from llmrec_ft.train.scoring import auc_report

    ds = prepare_dataset(DataConfig(dataset="collm", data_path=data_path))
    config = PointwiseConfig(max_history=0, cf_max_len=0, max_eval_samples=max_eval_samples)
    samples = build_pointwise_samples(ds, config)
    tests = warm_cold_test_sets(samples, config)
    splits = [samples["train"], samples["valid"], *tests.values()]
    num_users = max(max(s["user_id"]) for s in splits) + 1
    num_items = len(ds["items"]) + 1

    def columns(split):
        return torch.tensor(split["user_id"]), torch.tensor(split["candidate"]), torch.tensor(split["label"])

    start = time.perf_counter()
    model, info = fit_mf(columns(samples["train"]), columns(samples["valid"]), num_users, num_items,
                         MFTrainingConfig(seed=seed))
    scores = {group: predict(model, *columns(split)[:2]) for group, split in tests.items()}
    return {**auc_report(scores, tests), **info, "train_seconds": time.perf_counter() - start}


def summary(runs: list[dict]) -> dict:
    """Mean and sample std (0 for one seed) of every column over seeds."""
    out = {}
    for column in COLUMNS:
        values = [r[column] for r in runs if r.get(column) is not None]
        out[column] = {"mean": statistics.fmean(values) if values else None,
                       "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}
    return out


def markdown(rows: list[dict]) -> str:
    def cell(stat):
        if stat is None or stat["mean"] is None:
            return "-"
        return f"{stat['mean']:.4f}" + (f" ± {stat['std']:.4f}" if stat["n"] > 1 else "")

    lines = ["| model | AUC | UAUC | AUC warm | UAUC warm | AUC cold | UAUC cold |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | " + " | ".join(cell(r['metrics'].get(c)) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,  # --seed: the recipe's
                                     epilog="Arguments it does not know go to recipes/sasrecllm.py as they are, "
                                            "after the budget's (e.g. -- --eval_steps 100).")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="Embedded name, Hub id or local folder.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="gpu")
    parser.add_argument("--data_path", default=str(next((p for p in SHARED_CANDIDATES if p.is_dir()),
                                                         SHARED_CANDIDATES[1])),
                        help="Folder of CoLLM's train/valid/test .parquet (or .pkl).")
    parser.add_argument("--max_steps", type=int, help="Steps of the SASRecLLM (hybrid) stage.")
    parser.add_argument("--text_stage_max_steps", type=int, help="Steps of the text-only (TALLRec) stage.")
    parser.add_argument("--max_train_samples", type=int, help="Training rows kept (random, seeded).")
    parser.add_argument("--max_eval_samples", type=int, help="Cap on test warm and on test cold (default: all).")
    parser.add_argument("--batch_size", type=int, help="per_device_train_batch_size.")
    parser.add_argument("--learning_rate", type=float)
    parser.add_argument("--skip_mf", action="store_true")
    parser.add_argument("--output_dir", default="runs/paper_collm")
    parser.add_argument("--results", default=str(RESULTS))
    args, extra = parser.parse_known_args()  # the rest goes to the recipe, e.g. -- --eval_steps 100
    extra = [arg for arg in extra if arg != "--"]
    owned = {"--seed", "--output_dir", "--model_name_or_path", "--data_path", "--config", "--schedule"}
    if clash := sorted({arg.split("=")[0] for arg in extra} & owned):
        raise SystemExit(f"{clash}: set by this script (use --seeds, --output_dir, --model, --data_path), not a "
                         "recipe argument to pass on")
    if not Path(args.data_path).is_dir():
        raise SystemExit(f"{args.data_path}: no CoLLM data there (see ../shared/data/collm-ml-1m/README.md)")

    budget = dict(BUDGETS[args.budget])
    for knob in ("max_steps", "text_stage_max_steps", "max_train_samples", "max_eval_samples", "learning_rate"):
        if getattr(args, knob) is not None:
            budget[knob] = getattr(args, knob)
    if args.batch_size is not None:
        budget["per_device_train_batch_size"] = args.batch_size
    budget.update(model_name_or_path=args.model, data_path=args.data_path)
    tag = f"{Path(args.model).name}_{args.budget}"
    runs, mf_runs = {}, []
    for seed in args.seeds:
        runs[seed] = run_recipe(Path(args.output_dir) / tag / f"seed{seed}", {**budget, "seed": seed}, extra)
        if not args.skip_mf:  # MF does not depend on the LLM: one run per seed and test cap, kept like the recipe's
            cap = budget["max_eval_samples"] or "all"
            mf_path = Path(args.output_dir) / f"mf_{Path(args.data_path).name}_eval{cap}" / f"seed{seed}.json"
            if not mf_path.exists():
                write_json(mf_path, {**mf_metrics(args.data_path, seed, budget["max_eval_samples"]),
                                     "device": "cpu"})  # fit_mf trains on the CPU
            mf_runs.append(json.loads(mf_path.read_text()))

    def ours(name, key, sub, timing):
        per_seed = [(r[key][sub] if sub else r[key]) for r in runs.values()]
        seconds = [r["timings_s"][timing] for r in runs.values()]
        return {"model": name, "metrics": summary(per_seed), "per_seed": per_seed,
                "train_seconds_mean": statistics.fmean(seconds)}

    rows = [{"model": name, "metrics": {"auc_all": {"mean": auc, "std": 0.0, "n": 1},
                                        "uauc_all": {"mean": u, "std": 0.0, "n": 1}}, "published": True}
            for name, auc, u in PUBLISHED]
    if mf_runs:
        rows.append({"model": "MF (ours)", "metrics": summary(mf_runs), "per_seed": mf_runs})
    rows += [ours("SASRec next-item score (ours)", "sasrec", "next_item", "sasrec_pretrain"),
             ours("SASRec + logistic head (ours)", "sasrec", "classifier", "sasrec_pretrain"),
             ours(f"Text-only LoRA, TALLRec-style ({args.model})", "text_only_lora", None, "text_stage"),
             ours(f"SASRecLLM ({args.model})", "sasrecllm", None, "hybrid_stage")]
    table = markdown(rows)
    print(table)
    first = next(iter(runs.values()))
    write_json(args.results, {"model": args.model, "budget": args.budget, "seeds": args.seeds, "overrides": budget,
                              "extra_recipe_args": extra, "runs": runs, "mf_runs": mf_runs,
                              "device": first.get("device"),
                              "samples": first["samples"], "rows": rows, "markdown": table,
                              "wall_seconds": {seed: r.get("wall_seconds") for seed, r in runs.items()}})


if __name__ == "__main__":
    main()
