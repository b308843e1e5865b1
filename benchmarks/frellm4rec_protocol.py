"""FreLLM4Rec on the authors' protocol: how much of the filters' gain survives without the TFM leak (issue 15).

    python benchmarks/frellm4rec_protocol.py --budget cpu --datasets ml-100k --seeds 0   # plumbing check only
    python benchmarks/frellm4rec_protocol.py --budget gpu                                 # the real numbers

Every run is ``recipes/frellm4rec.py --protocol authors`` (``llmrec_ft/filters/frellm4rec_authors.py``: gated
fusion, G-LPF after the projections, last-token text, per-position sampled softmax, TFM dropout 0.2) on
``recipes/configs/frellm4rec_ml100k.yaml``; only the dataset, filters, leak switch, seed and budget change.
Variants: no filter, +G-LPF, +TFM, +G-LPF +TFM, the last two with ``tfm_leak`` true (the authors' non-causal
TFM over sequences that contain the targets) and false (causal TFM). Without TFM the switch changes nothing,
so those two variants are run once and listed under both. Per dataset and seed one SASRec (early-stopped on
valid NDCG@10) is shared by every variant.

Datasets: embedded ML-100K, and Amazon Beauty (``dataset: sequences``) from the team's ``shared/data/
amazon14-beauty`` (found next to the clone or at ``$LLMREC_FT_SHARED_DATA``; skipped with a message when absent).
Metrics on test: the authors' (target among 99 uniform items, history not excluded) and full ranking (history
masked), mean ± std over seeds. Printed as markdown and written under the budget's key into
``<results_dir>/frellm4rec_protocol.json`` after every seed, with every run's metrics, timings and device;
runs stored by earlier calls (same budget and backbone) are kept, so seeds and datasets can be run in
separate calls. Processes run side by side each take their own ``--results_dir``; ``--merge`` then puts
their files into one table.

Budgets: ``cpu`` = 2 steps of 8 sequences of 10 items, 2 SASRec epochs: checks the pipeline, the numbers mean
nothing. ``gpu`` = 300 steps of 64 sequences of 20 items (lr 5e-4 as in the authors' run script), SASRec up to
50 epochs; one dataset and seed (SASRec + 6 runs) took 11 min (ML-100K) and 18 min (Beauty) with six such
processes sharing one H200 (session 6).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import statistics
from pathlib import Path

import torch
from transformers import TrainingArguments
from trl import TrlParser

from llmrec_ft.data import DataConfig
from llmrec_ft.io import write_json

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "frellm4rec_ml100k.yaml"
RECIPE = runpy.run_path(str(ROOT / "recipes" / "frellm4rec.py"))  # not "__main__": defines, runs nothing
FILTERS = {"no filter": ("false", "false"), "+G-LPF": ("true", "false"), "+TFM": ("false", "true"),
           "+G-LPF +TFM": ("true", "true")}
BUDGETS = {"cpu": ["--max_steps", "2", "--per_device_train_batch_size", "8", "--max_len", "10",
                   "--sasrec_epochs", "2", "--eval_batch_size", "128"],
           "gpu": ["--max_steps", "300", "--per_device_train_batch_size", "64", "--max_len", "20",
                   "--learning_rate", "5e-4", "--sasrec_epochs", "50", "--eval_batch_size", "256"]}
METRICS = ("ndcg@10", "hr@10")
PROTOCOLS = {"sampled": "test_sampled", "full": "test"}  # name in the table -> key in metrics.json


def shared_beauty() -> Path | None:
    """The Amazon Beauty folder (``sequences.txt`` + ``items.tsv``), or None."""
    bases = [Path(os.environ["LLMREC_FT_SHARED_DATA"])] if "LLMREC_FT_SHARED_DATA" in os.environ else []
    bases += [base / "shared" / "data" for base in (ROOT, ROOT.parent, ROOT.parent.parent)]
    return next((base / "amazon14-beauty" for base in bases if (base / "amazon14-beauty" / "sequences.txt").is_file()),
                None)


def dataset_flags(name: str) -> list[str] | None:
    if name == "ml-100k":
        return ["--dataset", "ml-100k"]
    folder = shared_beauty()
    if folder is None:
        print("amazon-beauty: shared/data/amazon14-beauty not found (set LLMREC_FT_SHARED_DATA); skipped")
        return None
    return ["--dataset", "sequences", "--data_path", str(folder / "sequences.txt"),
            "--item_path", str(folder / "items.tsv")]


def run_recipe(argv: list[str]) -> dict:
    parser = TrlParser((RECIPE["FreLLM4RecArgs"], DataConfig, TrainingArguments))
    return RECIPE["main"](*parser.parse_args_and_config(["--config", str(CONFIG), *argv]))


def runs_of(variant: str) -> list[tuple[str, str]]:
    """``(leak label, --tfm_leak value)`` pairs to run: one run when there is no TFM (the switch is moot)."""
    return [("leak", "true"), ("no leak", "false")] if FILTERS[variant][1] == "true" else [("either", "false")]


def summarize(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "per_seed": values}


def markdown(table: dict, budget: str) -> str:
    columns = [f"{protocol} {metric}" for protocol in PROTOCOLS for metric in METRICS]
    lines = [f"FreLLM4Rec, authors' protocol, test, budget={budget} (sampled = target among 99 uniform items, "
             "history not excluded; full = whole catalogue, history masked), mean ± std over seeds", "",
             "| dataset | variant | TFM leak | seeds | " + " | ".join(columns) + " |",
             "|---" * (4 + len(columns)) + "|"]
    for key, row in table.items():
        dataset, variant, leak = key.split(" | ")
        cells = [f"{row[c]['mean']:.4f} ± {row[c]['std']:.4f}" for c in columns]
        seeds = len(row[columns[0]]["per_seed"])
        lines.append(f"| {dataset} | {variant} | {leak} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_of(runs: dict) -> dict:
    """``{"dataset | variant | leak": {column: summary over seeds}}`` from the stored runs; a run without TFM
    fills both the leak and the no-leak row; the SASRec every variant builds on is its own row
    (``dataset | SASRec (ID only) | -``, from the no-filter runs that recorded it)."""
    rows: dict[str, dict[str, list[float]]] = {}

    def add(row_key: str, values: dict) -> None:
        row = rows.setdefault(row_key, {})
        for column, value in values.items():
            row.setdefault(column, []).append(value)

    for key in sorted(runs, key=lambda k: int(k.rsplit("seed", 1)[1])):
        dataset, variant, leak_label, _ = key.split(" | ")
        for label in (["leak", "no leak"] if leak_label == "either" else [leak_label]):
            add(f"{dataset} | {variant} | {label}", runs[key]["metrics"])
        if variant == "no filter" and "sasrec" in runs[key]:
            add(f"{dataset} | SASRec (ID only) | -", runs[key]["sasrec"])
    order = [f"{dataset} | {variant} | {leak}" for dataset in ("ml-100k", "amazon-beauty")
             for variant, leaks in [*((v, ("leak", "no leak")) for v in FILTERS), ("SASRec (ID only)", ("-",))]
             for leak in leaks]
    return {key: {column: summarize(values) for column, values in rows[key].items()} for key in order if key in rows}


def store(path: Path, merged: dict, runs: dict, budget: str, backbone: str) -> None:
    """Print the table of ``runs`` and write it, with the runs, under ``budget`` in ``path`` (atomically)."""
    table = table_of(runs)
    report = markdown(table, budget)
    print(report)
    merged[budget] = {"backbone": backbone, "budget_flags": BUDGETS[budget], "table": table, "markdown": report,
                      "runs": runs}
    write_json(path, merged)


def merged_runs(files: list[Path], budget: str, backbone: str, runs: dict) -> dict:
    """``runs`` (those already stored) plus the runs stored under ``budget`` in each of ``files``.

    Raises:
        SystemExit: a file is missing, has no ``budget`` entry, was made with another backbone or other budget
            flags, or holds a run that ``runs`` or an earlier file holds with different metrics.
    """
    runs = dict(runs)
    for file in files:
        if not file.is_file():
            raise SystemExit(f"--merge {file}: no such file")
        entry = json.loads(file.read_text()).get(budget)
        if entry is None:
            raise SystemExit(f"--merge {file}: no {budget!r} entry")
        if entry["backbone"] != backbone:
            raise SystemExit(f"--merge {file}: made with backbone {entry['backbone']!r}, not {backbone!r} (--backbone)")
        if entry["budget_flags"] != BUDGETS[budget]:
            raise SystemExit(f"--merge {file}: made with budget flags {entry['budget_flags']}, not today's "
                             f"{BUDGETS[budget]}")
        for key, run in entry["runs"].items():
            if key in runs and runs[key]["metrics"] != run["metrics"]:
                raise SystemExit(f"--merge {file}: run {key!r} differs from the one already stored or merged")
            runs[key] = run
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="cpu",
                        help="cpu: a 2-step plumbing check; gpu: the real numbers (its entry of the results file, "
                             "--merge included).")
    parser.add_argument("--datasets", nargs="+", choices=["ml-100k", "amazon-beauty"],
                        default=["ml-100k", "amazon-beauty"],
                        help="Amazon Beauty: shared/data next to the clone, or $LLMREC_FT_SHARED_DATA.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backbone", default="smollm2-135m-instruct", help="The frozen LLM (embedded name or Hub id).")
    parser.add_argument("--runs_dir", default=str(ROOT / "runs" / "bench_frellm4rec_protocol"),
                        help="Every run's folder, and the SASRec each dataset and seed shares.")
    parser.add_argument("--results_dir", default=str(ROOT / "benchmarks" / "results"),
                        help="Where frellm4rec_protocol.json is read and written.")
    parser.add_argument("--merge", nargs="+", type=Path, default=[],
                        help="frellm4rec_protocol.json files of processes run side by side (each with its own "
                             "--results_dir): their runs of this budget and backbone join ours; nothing is trained.")
    cli = parser.parse_args()
    path = Path(cli.results_dir) / "frellm4rec_protocol.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    previous = merged.get(cli.budget, {})
    # Runs of earlier invocations (other seeds or datasets) are kept, so the work can be split across calls.
    runs = previous.get("runs", {}) if previous.get("backbone") == cli.backbone else {}
    if cli.merge:  # --datasets and --seeds do not apply: every run of every file joins
        store(path, merged, merged_runs(cli.merge, cli.budget, cli.backbone, runs), cli.budget, cli.backbone)
        return
    for dataset in cli.datasets:
        flags = dataset_flags(dataset)
        if flags is None:
            continue
        for seed in cli.seeds:
            sasrec_dir = Path(cli.runs_dir) / dataset / f"seed{seed}" / "sasrec"  # shared by budgets and variants
            for variant, (glpf, tfm) in FILTERS.items():
                for leak_label, leak in runs_of(variant):
                    output_dir = Path(cli.runs_dir) / cli.budget / dataset / f"seed{seed}" / (
                        variant.replace(" ", "_").replace("+", "plus_") + ("" if tfm == "false" else f"_leak_{leak}"))
                    trained_here = not sasrec_dir.joinpath("config.json").exists()
                    argv = [*flags, *BUDGETS[cli.budget], "--protocol", "authors", "--glpf", glpf, "--tfm", tfm,
                            "--tfm_leak", leak, "--energy_users", "0", "--eval_splits", "test",
                            "--backbone", cli.backbone, "--seed", str(seed), "--output_dir", str(output_dir),
                            *([] if trained_here else ["--sasrec_checkpoint", str(sasrec_dir)])]
                    metrics = run_recipe(argv)
                    if trained_here:
                        shutil.copytree(output_dir / "sasrec", sasrec_dir, ignore=shutil.ignore_patterns("checkpoints"))
                    runs[f"{dataset} | {variant} | {leak_label} | seed{seed}"] = {
                        "metrics": {f"{protocol} {metric}": metrics[key]["all"][metric]
                                    for protocol, key in PROTOCOLS.items() for metric in METRICS},
                        "sasrec": {f"{protocol} {metric}": metrics[f"sasrec_{key}"]["all"][metric]
                                   for protocol, key in PROTOCOLS.items() for metric in METRICS},
                        "timings_s": metrics["timings"],
                        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
            store(path, merged, runs, cli.budget, cli.backbone)  # after every seed: an interrupted run keeps it


if __name__ == "__main__":
    main()
