"""SASRec on the embedded MovieLens-100K: the recipe config, several seeds, mean ± std of full-ranking metrics.

    python benchmarks/sasrec_ml100k.py [--seeds 0 1 2] [-- any recipe override, e.g. --dropout 0.5]

Leave-one-out, every item ranked, the user's history masked; early stopping on valid NDCG@10 (the config's
patience, at most 200 epochs) as RecBole does. Reference: RecBole's SASRec on the same protocol reaches a valid
NDCG@10 of about 0.07. Writes ``benchmarks/results/sasrec_ml100k.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from trl import TrlParser

from llmrec_ft.collab.trainer import RankingTrainingArguments
from llmrec_ft.data import DataConfig
from llmrec_ft.io import write_json

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "sasrec_ml100k.yaml"
RESULTS = Path(__file__).parent / "results" / "sasrec_ml100k.json"
METRICS = ["ndcg@10", "hr@10", "mrr@10", "ndcg@20", "hr@20"]


def load_recipe():
    spec = importlib.util.spec_from_file_location("sasrec_recipe", ROOT / "recipes" / "sasrec.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the recipe's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args, overrides = parser.parse_known_args()
    overrides = [arg for arg in overrides if arg != "--"]
    recipe = load_recipe()

    runs = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as output_dir:
            cli = ["--config", str(args.config), "--seed", str(seed), "--output_dir", output_dir,
                   "--disable_tqdm", "true", *overrides]
            model_args, data_args, training_args = TrlParser(
                (recipe.SASRecArgs, DataConfig, RankingTrainingArguments)).parse_args_and_config(cli)
            device = training_args.device
            start = time.perf_counter()
            metrics = recipe.main(model_args, data_args, training_args)
            runs.append({"seed": seed, "seconds": time.perf_counter() - start, "epochs": metrics["epochs_trained"],
                         "valid": metrics["valid"], "test": metrics["test"]})
        print(f"seed {seed}: valid ndcg@10 {metrics['valid']['all']['ndcg@10']:.4f}, "
              f"test ndcg@10 {metrics['test']['all']['ndcg@10']:.4f} ({runs[-1]['epochs']:.0f} epochs)", flush=True)

    summary = {split: {group: {name: mean_std([run[split][group][name] for run in runs]) for name in METRICS}
                       for group in runs[0][split] if all(name in runs[0][split][group] for name in METRICS)}
               for split in ("valid", "test")}
    device = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    write_json(args.output, {"config": str(args.config.relative_to(ROOT)) if args.config.is_relative_to(ROOT)
                             else str(args.config), "overrides": overrides, "device": device, "seeds": args.seeds,
                             "summary": summary, "runs": runs})

    print(f"\nSASRec, ML-100K leave-one-out, full ranking, {len(runs)} seeds (mean ± std), {device}\n")
    print("| split | users | " + " | ".join(METRICS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in METRICS) + " |")
    for split, groups in summary.items():
        for group, metrics in groups.items():
            users = runs[0][split][group]["num_users"]
            cells = [f"{metrics[name]['mean']:.4f} ± {metrics[name]['std']:.4f}" for name in METRICS]
            print(f"| {split} ({group}) | {users} | " + " | ".join(cells) + " |")
    print(f"\nepochs to best+patience: {[round(run['epochs']) for run in runs]}, "
          f"seconds per run: {[round(run['seconds']) for run in runs]}")


if __name__ == "__main__":
    main()
