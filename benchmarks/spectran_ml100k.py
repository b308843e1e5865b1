"""SpecTran vs. ID-only, MLP-adapter and SVD top-k on SASRec, GRU4Rec and BERT4Rec (embedded ML-100K).

    python benchmarks/spectran_ml100k.py [--seeds 0 1 2] [--workers 4] [-- any recipe override, e.g. --dropout 0.3]
    python benchmarks/spectran_ml100k.py --config recipes/configs/spectran_beauty.yaml --name spectran_beauty \
        --backbones sasrec hstu --workers 12     # SpecTran's protocol on Amazon Beauty (InfoNCE), one GPU

Every run is ``recipes/spectran.py`` with ``recipes/configs/spectran_ml100k.yaml`` (hidden 64, max length 50,
Adam 1e-3, at most 200 epochs, early stopping on valid NDCG@10 with patience 10), leave-one-out, every item
ranked, the user's history masked. Item texts are encoded once by the embedded SmolLM2-135M-Instruct and
cached before the runs start, so workers only read the cache. ``--workers`` runs that many trainings at once
(one CPU thread each; on a GPU machine they share the GPU).

Prints a markdown table (mean ± std over seeds) and the relative gain of SpecTran over the best baseline of
each backbone, and writes ``benchmarks/results/spectran_ml100k.json`` plus the dimension-collapse diagnostic
``spectran_ml100k_spectrum.png`` / ``.json`` (normalized singular values of the adapted item embeddings, first
seed; the ID-only model's item table for reference).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from trl import TrlParser

from llmrec_ft.adapters import plot_spectra
from llmrec_ft.collab.trainer import RankingTrainingArguments
from llmrec_ft.data import DataConfig, prepare_dataset
from llmrec_ft.io import write_json

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "spectran_ml100k.yaml"
RESULTS = Path(__file__).parent / "results"
METRICS = ["ndcg@10", "hr@10", "ndcg@20", "hr@20", "mrr@10"]
BASELINES = ("none", "linear", "mlp", "svd")


def load_recipe():
    spec = importlib.util.spec_from_file_location("spectran_recipe", ROOT / "recipes" / "spectran.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def parse(recipe, config: Path, cli: list[str]):
    return TrlParser((recipe.FusedModelArgs, DataConfig, RankingTrainingArguments)).parse_args_and_config(
        ["--config", str(config), *cli])


def run_one(config: Path, backbone: str, adapter: str, seed: int, overrides: list[str]) -> dict:
    """One training in a worker process (one thread: parallel runs must not fight over cores)."""
    torch.set_num_threads(1)
    recipe = load_recipe()
    with tempfile.TemporaryDirectory() as output_dir:
        args = parse(recipe, config, ["--backbone", backbone, "--adapter", adapter, "--seed", str(seed),
                                      "--output_dir", output_dir, "--disable_tqdm", "true", "--report_to", "none",
                                      *overrides])
        start = time.perf_counter()
        metrics = recipe.main(*args)
        device = torch.cuda.get_device_name() if args[2].device.type == "cuda" else "CPU"
    return {"backbone": backbone, "adapter": adapter, "seed": seed, "seconds": time.perf_counter() - start,
            "epochs": metrics["epochs_trained"], "device": device, "valid": metrics["valid"], "test": metrics["test"],
            "spectrum": metrics["spectrum"]}


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def summarize(runs: list[dict], backbones: list[str], adapters: list[str]) -> dict:
    summary = {}
    for backbone in backbones:
        for adapter in adapters:
            group = [run for run in runs if run["backbone"] == backbone and run["adapter"] == adapter]
            entry = {split: {name: mean_std([run[split]["all"][name] for run in group]) for name in METRICS}
                     for split in ("valid", "test")}
            entry["device"] = " + ".join(sorted({run["device"] for run in group}))
            entry["epochs"] = mean_std([run["epochs"] for run in group])
            entry["seconds"] = mean_std([run["seconds"] for run in group])
            ranks = [run["spectrum"]["adapted"]["effective_rank"] for run in group if "adapted" in run["spectrum"]]
            entry["adapted_effective_rank"] = mean_std(ranks) if ranks else None
            entry["item_table_effective_rank"] = mean_std(
                [run["spectrum"]["item_table"]["effective_rank"] for run in group])
            summary[f"{backbone}/{adapter}"] = entry
    return summary


def gains(summary: dict, backbones: list[str], adapters: list[str]) -> dict:
    """Relative gain (%) of SpecTran's mean test metric over the best baseline's mean, per backbone."""
    baselines = [adapter for adapter in adapters if adapter in BASELINES]
    if "spectran" not in adapters or not baselines:
        return {}
    out = {}
    for backbone in backbones:
        for name in ("ndcg@10", "hr@10"):
            best = max(baselines, key=lambda adapter: summary[f"{backbone}/{adapter}"]["test"][name]["mean"])
            base = summary[f"{backbone}/{best}"]["test"][name]["mean"]
            ours = summary[f"{backbone}/spectran"]["test"][name]["mean"]
            out[f"{backbone}/{name}"] = {"best_baseline": best, "gain_percent": 100 * (ours - base) / base}
    out["average_gain_percent"] = statistics.mean(value["gain_percent"] for value in out.values())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backbones", nargs="+", default=["sasrec", "gru4rec", "bert4rec"])
    parser.add_argument("--adapters", nargs="+", default=["none", "mlp", "svd", "spectran"])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--name", default="spectran_ml100k", help="Result files are benchmarks/results/<name>*")
    parser.add_argument("--resume", action="store_true",
                        help="Keep the finished runs of <name>_runs.json (same config and overrides) and do the rest.")
    args, overrides = parser.parse_known_args()
    overrides = [arg for arg in overrides if arg != "--"]
    progress = RESULTS / f"{args.name}_runs.json"
    setup = {"config": str(args.config), "overrides": overrides}
    runs = []
    if args.resume and progress.exists():
        saved = json.loads(progress.read_text())
        if saved["setup"] != setup:
            raise ValueError(f"{progress} was made with {saved['setup']}, not {setup}; drop --resume or match them")
        runs = saved["runs"]

    # Prepare data and encode item texts once, here, so the workers only read caches.
    recipe = load_recipe()
    model_args, data_args, _ = parse(recipe, args.config, ["--output_dir", tempfile.gettempdir(), *overrides])
    recipe.item_text_matrix(prepare_dataset(data_args), model_args)
    dataset = {"ml-100k": "ML-100K", "sequences": Path(data_args.data_path or "").parent.name}.get(
        data_args.dataset, data_args.dataset)  # a sequences file is named after its folder (amazon14-beauty)

    done = {(run["backbone"], run["adapter"], run["seed"]) for run in runs}
    jobs = [(backbone, adapter, seed) for seed in args.seeds for backbone in args.backbones
            for adapter in args.adapters if (backbone, adapter, seed) not in done]
    start = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_one, args.config, *job, overrides) for job in jobs]
        for future in concurrent.futures.as_completed(futures):
            run = future.result()
            runs.append(run)
            write_json(progress, {"setup": setup, "runs": runs})  # an interrupted benchmark can --resume
            print(f"{run['backbone']:>8} + {run['adapter']:<8} seed {run['seed']}: valid ndcg@10 "
                  f"{run['valid']['all']['ndcg@10']:.4f}, test ndcg@10 {run['test']['all']['ndcg@10']:.4f} "
                  f"({run['epochs']:.0f} epochs, {run['seconds']:.0f} s)", flush=True)
    total = time.perf_counter() - start
    runs = [run for run in runs if run["backbone"] in args.backbones and run["adapter"] in args.adapters
            and run["seed"] in args.seeds]
    runs.sort(key=lambda run: (args.backbones.index(run["backbone"]), args.adapters.index(run["adapter"]),
                               run["seed"]))

    summary = summarize(runs, args.backbones, args.adapters)
    relative = gains(summary, args.backbones, args.adapters)
    device = " + ".join(sorted({run["device"] for run in runs}))  # --resume can join runs made on other machines
    spectra = {backbone: {} for backbone in args.backbones}
    for run in runs:
        if run["seed"] == args.seeds[0]:
            key = "adapted" if "adapted" in run["spectrum"] else "item_table"
            label = run["adapter"] if key == "adapted" else "ID-only (item table)"
            spectra[run["backbone"]][label] = run["spectrum"][key]["normalized_singular_values"]
    plot_spectra(spectra, RESULTS / f"{args.name}_spectrum.png",
                 title=f"Singular values of adapted item embeddings ({dataset}, seed {args.seeds[0]})")
    write_json(RESULTS / f"{args.name}_spectrum.json", spectra)
    for run in runs:
        run["spectrum"] = {name: {"effective_rank": value["effective_rank"]} for name, value in run["spectrum"].items()}
    write_json(RESULTS / f"{args.name}.json", {
        "config": str(args.config.relative_to(ROOT)) if args.config.is_relative_to(ROOT) else str(args.config),
        "overrides": overrides, "dataset": dataset, "loss": model_args.loss, "device": device, "workers": args.workers,
        "seconds_this_invocation": total,
        "seeds": args.seeds, "summary": summary, "gain_over_best_baseline": relative, "runs": runs})

    print(f"\n{dataset} leave-one-out, full ranking, loss {model_args.loss}, test split, {len(args.seeds)} seeds "
          f"(mean ± std), {device}, {len(jobs)} runs in {total / 60:.1f} min with {args.workers} workers\n")
    print("| backbone | item embedding | test NDCG@10 | test HR@10 | valid NDCG@10 | epochs | s/epoch "
          "| eff. rank (adapted) | device |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    names = {"none": "ID only", "linear": "ID + linear adapter", "mlp": "ID + MLP adapter", "svd": "ID + SVD top-k",
             "spectran": "ID + SpecTran"}
    for key, entry in summary.items():
        backbone, adapter = key.split("/")
        cells = [f"{entry[split][name]['mean']:.4f} ± {entry[split][name]['std']:.4f}"
                 for split, name in (("test", "ndcg@10"), ("test", "hr@10"), ("valid", "ndcg@10"))]
        rank = entry["adapted_effective_rank"]
        per_epoch = entry["seconds"]["mean"] / entry["epochs"]["mean"]
        print(f"| {backbone} | {names.get(adapter, adapter)} | " + " | ".join(cells) +
              f" | {entry['epochs']['mean']:.0f} | {per_epoch:.1f} | " + (f"{rank['mean']:.1f}" if rank else "-") +
              f" | {entry['device']} |")
    if relative:
        print("\nSpecTran vs. the best baseline (relative change of the mean test metric):")
        for key, value in relative.items():
            if key != "average_gain_percent":
                print(f"- {key}: {value['gain_percent']:+.2f}% (best baseline: {value['best_baseline']})")
        print(f"- average: {relative['average_gain_percent']:+.2f}% (the paper reports +9.17%)")


if __name__ == "__main__":
    main()
