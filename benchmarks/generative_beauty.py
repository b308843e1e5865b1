"""Generative recommendation on Amazon Beauty (the S3-Rec/TIGER/LC-Rec file): one table, next to our SASRec.

    python benchmarks/generative_beauty.py --budget gpu [--seeds 0 1 2] [--generative-seeds 0] [--rows ...]
    python benchmarks/generative_beauty.py --budget cpu          # tiny end-to-end check (~10 min on 2 CPU cores)

Rows (leave-one-out, full catalogue, HR@10 / NDCG@10 on test, history excluded and not excluded):

* ``sasrec``      our SASRec, full-catalogue cross-entropy, early-stopped on valid NDCG@10 (``--seeds``);
* ``sid_text``    next-SID generation, semantic IDs from item-text embeddings, history as codes;
* ``sid_collab``  the same with collaborative SIDs (text + SASRec item embeddings, concatenated);
* ``sid_cf``      text SIDs, plus ``<|user_cf|>``/``<|item_cf|>`` (projected SASRec vectors) in the prompt;
* ``title``       next-title generation under a title trie (BIGRec-style), history as titles.

Generative rows use ``llmrec_ft.generative.pipeline.run_generative`` (the recipe's code) with the budget knobs
below, ``--generative-seeds`` seeds each; SIDs and the SASRec they need are built per seed. Training and
evaluation seconds are reported per row. Published reference points on this file (NDCG@10, history not
excluded): TIGER 0.0384, LC-Rec re-runs 0.040-0.044, RPG 0.0464, SASRec-CE 0.0421 (../shared/data/README.md).
Writes ``benchmarks/results/generative_beauty.json`` (``--output``); ``--budget cpu`` defaults to
``generative_beauty_cpu.json`` and keeps only the first ``--max-users`` users so that it runs on a laptop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from trl import SFTConfig

from llmrec_ft.collab.sequences import ranking_batches
from llmrec_ft.collab.trainer import PretrainedSASRecArgs
from llmrec_ft.data import DataConfig, prepare_dataset
from llmrec_ft.eval.ranking import RankingAccumulator
from llmrec_ft.generative.examples import ExampleConfig
from llmrec_ft.generative.pipeline import GenerativeEvalArgs, SemanticIDArgs, run_generative, train_or_load_sasrec
from llmrec_ft.generative.training import GenerativeModelArgs
from llmrec_ft.io import write_json
from llmrec_ft.llm.backbone import EMBEDDED_MODEL

ROOT = Path(__file__).resolve().parents[1]
# The team's benchmark copy: $LLMREC_FT_SHARED_DATA, else ../shared/data next to the clone (or shared/ inside it).
_CANDIDATES = (ROOT.parent / "shared" / "data", ROOT / "shared" / "data")
SHARED = Path(os.environ.get("LLMREC_FT_SHARED_DATA") or next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0]))
ROWS = {
    "sid_text": dict(task="next_sid", history_format="codes", sid_source="text"),
    "sid_collab": dict(task="next_sid", history_format="codes", sid_source="text+collaborative"),
    "sid_cf": dict(task="next_sid", history_format="codes", sid_source="text", collaborative_tokens=True),
    "title": dict(task="next_title", history_format="titles", sid_source="text"),
}
BUDGETS = {  # GPU: ~4-7 minutes a generative row (SmolLM2-135M, one H200, 4,000 test users); CPU: a plumbing check
    "gpu": dict(max_steps=500, batch_size=32, eval_users=3000, max_users=None, max_train_examples=16000,
                sasrec_epochs=200, sasrec_patience=10, eval_batch_size=64),
    "cpu": dict(max_steps=4, batch_size=4, eval_users=8, max_users=150, max_train_examples=64,
                sasrec_epochs=3, sasrec_patience=2, eval_batch_size=8),
}


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


@torch.no_grad()
def sasrec_both_protocols(sasrec, ds, max_users: int | None) -> dict:
    """SASRec's test HR/NDCG@10 with the history excluded (ranking.py's convention) and not excluded."""
    test = ds["test"].select(range(min(max_users, len(ds["test"])))) if max_users else ds["test"]
    device = next(sasrec.parameters()).device
    out = {}
    for name, exclude in (("exclude_history", True), ("include_history", False)):
        accumulator = RankingAccumulator(ks=(10, 20))
        for batch in ranking_batches(test, sasrec.config.max_len, 512):
            scores = sasrec.score_all_items(batch["input_ids"].to(device)).float()
            history = batch["history"] if exclude else [[]] * len(scores)
            accumulator.add(scores, batch["targets"].to(device), history)
        out[name] = accumulator.compute()["all"]
    return out


def beauty_subset(source: Path, max_users: int | None, workdir: Path) -> tuple[Path, Path]:
    """The sequence file, or its first ``max_users`` lines (items then re-index over what they touch)."""
    sequences, items = source / "sequences.txt", source / "items.tsv"
    if not max_users:
        return sequences, items
    subset = workdir / "sequences_subset.txt"
    with open(sequences) as handle:
        subset.write_text("".join(line for _, line in zip(range(max_users), handle)))
    return subset, items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="gpu")
    parser.add_argument("--data", type=Path, default=SHARED / "amazon14-beauty", help="sequences.txt + items.tsv")
    parser.add_argument("--rows", nargs="*", default=["sasrec", *ROWS], choices=["sasrec", *ROWS],
                        help="Rows to run (none: only --append / --merge what earlier calls wrote).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="SASRec seeds.")
    parser.add_argument("--generative-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="Backbone: embedded name, local dir or Hub id.")
    parser.add_argument("--dtype", default=None, help="Default: bfloat16 on GPU, float32 on CPU.")
    parser.add_argument("--text-encoder", default="backbone", help="SID text embeddings (see pipeline.py).")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--max-history", type=int, default=20)
    parser.add_argument("--max-train-examples", type=int, default=None)
    parser.add_argument("--num-beams", type=int, default=20)
    parser.add_argument("--eval-users", type=int, default=None, help="First N test users (0 = all).")
    parser.add_argument("--eval-batch-size", type=int, default=None, help="Users per beam-search batch.")
    parser.add_argument("--max-users", type=int, default=None, help="Keep only the first N users of the file.")
    parser.add_argument("--sasrec-epochs", type=float, default=None, help="SASRec epochs upper bound.")
    parser.add_argument("--sasrec-patience", type=int, default=None, help="SASRec early-stopping patience.")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="Run folders (default: a temporary one).")
    parser.add_argument("--append", action="store_true",
                        help="Merge into --output's rows (runs of the same seed replaced): a table built over calls.")
    parser.add_argument("--merge", type=Path, nargs="+", default=[],
                        help="Also merge these results files' rows (e.g. two processes run side by side on two GPUs).")
    args = parser.parse_args()
    budget = BUDGETS[args.budget]
    pick = lambda name, key: getattr(args, name) if getattr(args, name) is not None else budget[key]  # noqa: E731
    eval_users = pick("eval_users", "eval_users") or None
    collab = dict(sasrec_epochs=pick("sasrec_epochs", "sasrec_epochs"),
                  sasrec_patience=pick("sasrec_patience", "sasrec_patience"))
    use_cpu = args.budget == "cpu" or not torch.cuda.is_available()
    dtype = args.dtype or ("float32" if use_cpu else "bfloat16")
    if not args.rows and not (args.append or args.merge):
        raise SystemExit("--rows is empty: nothing to run; add --append and/or --merge to tabulate earlier runs")
    for path in args.merge:
        if not path.is_file():
            raise SystemExit(f"--merge: {path} does not exist")
    if not (args.data / "sequences.txt").exists():
        raise SystemExit(f"{args.data}/sequences.txt not found: pass --data or set LLMREC_FT_SHARED_DATA")
    output = args.output or ROOT / "benchmarks" / "results" / (
        "generative_beauty.json" if args.budget == "gpu" else "generative_beauty_cpu.json")

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        sequences, items = beauty_subset(args.data, pick("max_users", "max_users"), Path(tmp))
        ds = prepare_dataset(DataConfig(dataset="sequences", data_path=str(sequences), item_path=str(items)))
        results = {"config": {**vars(args), "data": str(args.data), "output": str(output), "budget_values": budget,
                              "dtype": dtype, "eval_users": eval_users, "workdir": str(workdir)},
                   "counts": {"users": len(ds["test"]), "items": len(ds["items"])}, "rows": {}}
        earlier = earlier_runs(output, results) if args.append else {}
        for path in args.merge:
            for row, runs in earlier_runs(path, results).items():
                earlier[row] = merge_runs(earlier.get(row, []), runs)
        results["rows"] = {row: summarise(runs) for row, runs in earlier.items()}

        if "sasrec" in args.rows:
            runs = []
            for seed in args.seeds:
                start = time.perf_counter()
                sasrec, _ = train_or_load_sasrec(ds, PretrainedSASRecArgs(**collab), workdir / f"sasrec_seed{seed}",
                                                 seed, use_cpu)
                train_s = time.perf_counter() - start
                start = time.perf_counter()
                runs.append({"seed": seed, **sasrec_both_protocols(sasrec.to("cpu" if use_cpu else "cuda"), ds,
                                                                   eval_users),
                             "train_s": train_s, "eval_s": time.perf_counter() - start})
                results["rows"]["sasrec"] = summarise(merge_runs(earlier.get("sasrec", []), runs))
                write_json(output, results)

        for row in [r for r in args.rows if r in ROWS]:
            runs = []
            for seed in args.generative_seeds:
                spec = ROWS[row]
                out_dir = workdir / f"{row}_seed{seed}"
                sft = SFTConfig(output_dir=str(out_dir), seed=seed, max_steps=pick("max_steps", "max_steps"),
                                per_device_train_batch_size=pick("batch_size", "batch_size"),
                                learning_rate=args.learning_rate, lr_scheduler_type="cosine", warmup_steps=0.05,
                                logging_steps=50, save_strategy="no", report_to=[], use_cpu=use_cpu,
                                bf16=dtype == "bfloat16", disable_tqdm=True, dataloader_num_workers=0)
                metrics, _ = run_generative(
                    ds, GenerativeModelArgs(model_name_or_path=args.model, dtype=dtype),
                    ExampleConfig(task=spec["task"], history_format=spec["history_format"],
                                  max_history=args.max_history,
                                  collaborative_tokens=spec.get("collaborative_tokens", False),
                                  max_train_examples=pick("max_train_examples", "max_train_examples"),
                                  example_seed=seed),
                    SemanticIDArgs(sid_source=spec["sid_source"], text_encoder=args.text_encoder, sid_seed=seed),
                    PretrainedSASRecArgs(sasrec_checkpoint=str(workdir / f"sasrec_seed{seed}" / "sasrec")
                                         if (workdir / f"sasrec_seed{seed}" / "sasrec" / "config.json").exists()
                                         else None, **collab),
                    GenerativeEvalArgs(num_beams=args.num_beams, eval_ks=[10, 20], eval_users=eval_users,
                                       eval_batch_size=pick("eval_batch_size", "eval_batch_size"), eval_valid=False),
                    sft)
                timings = metrics["timings_s"]
                runs.append({"seed": seed, **metrics["test"], "semantic_ids": metrics.get("semantic_ids"),
                             "train_examples": metrics["train_examples"], "train_s": timings["train"],
                             "eval_s": timings["eval_test"], "prep_s": timings.get("semantic_ids", 0.0)
                             + timings.get("sasrec", 0.0)})
            results["rows"][row] = summarise(merge_runs(earlier.get(row, []), runs))
            write_json(output, results)  # after every row: a long run keeps what it finished

    write_json(output, results)
    print(table(results))
    print(f"-> {output}")


def earlier_runs(output: Path, results: dict) -> dict[str, list[dict]]:
    """``{row: runs}`` of an earlier call's ``output``, which must be on the same data (same folder name, users
    and items) and evaluation users."""
    if not output.exists():
        return {}
    earlier = json.loads(output.read_text())
    theirs, mine = table_identity(earlier), table_identity(results)
    for key in mine:
        if theirs[key] != mine[key]:
            raise SystemExit(f"{output} has {key}={theirs[key]!r}, this call {mine[key]!r}: a table must hold "
                             "runs on the same data and users; pass another --output")
    config = earlier["config"]
    results["config"].setdefault("earlier_calls", []).extend(
        [*config.get("earlier_calls", []), {k: v for k, v in config.items() if k != "earlier_calls"}])
    return {row: data["runs"] for row, data in earlier["rows"].items()}


def table_identity(results: dict) -> dict:
    """What every run of one table shares: the data (folder name, users, items), evaluated users, model, beams and
    history length."""
    config = results["config"]
    return {"data": [Path(config["data"]).name, results["counts"]],
            **{key: config[key] for key in ("eval_users", "model", "num_beams", "max_history")}}


def merge_runs(earlier: list[dict], new: list[dict]) -> list[dict]:
    """Earlier runs whose seed this call did not run, then this call's runs, by seed."""
    seeds = {run["seed"] for run in new}
    return sorted([run for run in earlier if run["seed"] not in seeds] + new, key=lambda run: run["seed"])


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for protocol in ("exclude_history", "include_history"):
        for metric in ("hr@10", "ndcg@10"):
            summary[f"{protocol}/{metric}"] = mean_std([r[protocol][metric] for r in runs])
    summary["train_s"] = mean_std([r["train_s"] for r in runs])
    summary["eval_s"] = mean_std([r["eval_s"] for r in runs])
    return {"summary": summary, "runs": runs}


def table(results: dict) -> str:
    header = (f"{'row':<11} {'HR@10 excl':>16} {'NDCG@10 excl':>16} {'HR@10 incl':>16} {'NDCG@10 incl':>16} "
              f"{'train s':>8} {'eval s':>7} seeds")
    lines = [f"Amazon Beauty: {results['counts']['users']} users, {results['counts']['items']} items; "
             f"test users evaluated: {results['config']['eval_users'] or 'all'}", header]
    for row, data in results["rows"].items():
        s = data["summary"]
        cells = [f"{s[k]['mean']:.4f}±{s[k]['std']:.4f}" for k in
                 ("exclude_history/hr@10", "exclude_history/ndcg@10", "include_history/hr@10",
                  "include_history/ndcg@10")]
        lines.append(f"{row:<11} " + " ".join(f"{c:>16}" for c in cells) +
                     f" {s['train_s']['mean']:8.1f} {s['eval_s']['mean']:7.1f} {len(data['runs'])}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
