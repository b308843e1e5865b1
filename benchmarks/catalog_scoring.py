"""Full-catalog Yes/No scoring: one forward per candidate vs one shared-prefix KV cache per user (issue 7).

    python benchmarks/catalog_scoring.py --shapes qwen2.5-0.5b qwen2.5-7b --out benchmarks/results/catalog_scoring.json

A random-initialised real shape (bf16, LoRA r=16 adapters attached, as after training) wrapped in
``CollaborativeLM`` scores every item of an ML-100K-sized catalog (1682 candidates) for a user. Prompts are
synthetic but shaped like ``llmrec_ft/prompts/yes_no.jinja``: a shared prefix of ~300 tokens (user slot, 10 history
titles with their item slots) and a per-candidate suffix of 15-35 tokens (title, item slot, closing
question and chat-template tail). ``llmrec_ft.llm.prefix_scoring.score_prompts`` runs both ways:
``shared_prefix=False`` (naive: each candidate's full prompt, batched) and ``True`` (prefix once, its KV
cache repeated over chunks of candidates). Reported: users/s, the speed-up, and the agreement of the two
(max |P(Yes) difference| and relative error of the Yes-No logit margin; bf16 noise is ~1e-2).
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from llmrec_ft.collab.sasrec import SASRec, SASRecConfig
from llmrec_ft.io import write_json
from llmrec_ft.llm.collaborative_lm import CollaborativeLM
from llmrec_ft.llm.prefix_scoring import score_prompts
from llmrec_ft.llm.projector import CollaborativeProjector
from llmrec_ft.llm.tokens import CollaborativeTokenIds

from train_throughput import SHAPES, model_config  # noqa: E402  (same shapes as the training benchmark)

NUM_ITEMS, HISTORY = 1682, 10
YES, NO = 9454, 2753  # any two ordinary token ids: the model is random, only speed and agreement matter


def build(shape: str, device: str) -> CollaborativeLM:
    config = model_config(shape)
    torch.manual_seed(0)
    with torch.device(device):
        lm = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    lm = get_peft_model(lm, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
    token_ids = CollaborativeTokenIds(user=config.vocab_size - 2, item=config.vocab_size - 1)
    sasrec = SASRec(SASRecConfig(num_items=NUM_ITEMS, hidden_size=64, dropout=0.0)).to(device)
    projector = CollaborativeProjector(64, 320, config.hidden_size).to(device)
    projector.scale_to_embedding_norm_(sasrec.item_embeddings.weight[1:], lm.get_input_embeddings().weight)
    model = CollaborativeLM(lm, projector, sasrec, token_ids).to(torch.bfloat16).eval()
    return model


def user_prompts(rng: np.random.Generator, token_ids: CollaborativeTokenIds, titles: list[list[int]], closing):
    """One user's 1682 candidate prompts (token ids) and their collaborative inputs."""
    history = rng.integers(1, NUM_ITEMS + 1, size=HISTORY).tolist()
    prefix = rng.integers(100, 30000, size=12).tolist() + [token_ids.user] + rng.integers(100, 30000, 8).tolist()
    for item in history:
        prefix += titles[item] + [token_ids.item] + rng.integers(100, 30000, 12).tolist()
    prefix += rng.integers(100, 30000, size=6).tolist()
    prompts = [prefix + titles[c] + [token_ids.item] + closing for c in range(1, NUM_ITEMS + 1)]
    cf_items = [history + [c] for c in range(1, NUM_ITEMS + 1)]
    return prompts, history, cf_items


def time_scoring(model, prompts, history, cf_items, shared: bool, chunk: int, device: str):
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    logits = score_prompts(model, prompts, [YES, NO], cf_history=history, cf_items=cf_items,
                           chunk_size=chunk, shared_prefix=shared)
    if device == "cuda":
        torch.cuda.synchronize()
    return logits, time.perf_counter() - start


def run_shape(shape: str, args, rows: list[dict]) -> None:
    device = args.device
    model = build(shape, device)
    rng = np.random.default_rng(0)
    titles = [[]] + [rng.integers(100, 30000, size=int(rng.integers(4, 18))).tolist() for _ in range(NUM_ITEMS)]
    closing = rng.integers(100, 30000, size=12).tolist()
    users = [user_prompts(rng, model.token_ids, titles, closing) for _ in range(max(args.users, args.naive_users) + 1)]
    prefix_len = len(users[0][0][0]) - len(titles[1]) - 1 - len(closing)
    # warm-up on a spare user (kernels, allocator), then timed users
    time_scoring(model, users[-1][0][:256], users[-1][1], users[-1][2][:256], True, args.chunk_shared, device)
    time_scoring(model, users[-1][0][:args.chunk_naive], users[-1][1], users[-1][2][:args.chunk_naive], False,
                 args.chunk_naive, device)
    shared_times, naive_times, max_p, rel = [], [], [], []
    for index in range(max(args.users, args.naive_users)):
        prompts, history, cf_items = users[index]
        if index < args.users:
            fast, seconds = time_scoring(model, prompts, history, cf_items, True, args.chunk_shared, device)
            shared_times.append(seconds)
        if index < args.naive_users:
            slow, seconds = time_scoring(model, prompts, history, cf_items, False, args.chunk_naive, device)
            naive_times.append(seconds)
            margin_fast, margin_slow = fast[:, 0] - fast[:, 1], slow[:, 0] - slow[:, 1]
            max_p.append(float((torch.sigmoid(margin_fast) - torch.sigmoid(margin_slow)).abs().max()))
            rel.append(float((margin_fast - margin_slow).norm() / margin_slow.norm()))
    row = {"shape": shape, "candidates": NUM_ITEMS, "prefix_tokens": prefix_len,
           "mean_suffix_tokens": float(np.mean([len(t) + 1 + len(closing) for t in titles[1:]])),
           "chunk_shared": args.chunk_shared, "chunk_naive": args.chunk_naive,
           "shared_s_per_user": float(np.mean(shared_times)), "naive_s_per_user": float(np.mean(naive_times)),
           "max_abs_p_yes_diff": max(max_p), "margin_rel_err": max(rel),
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}
    row["shared_users_per_s"] = 1 / row["shared_s_per_user"]
    row["naive_users_per_s"] = 1 / row["naive_s_per_user"]
    row["speedup"] = row["naive_s_per_user"] / row["shared_s_per_user"]
    rows.append(row)
    print(json.dumps(row), flush=True)
    write_json(args.out, {"rows": rows, **args.meta})
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["qwen2.5-0.5b", "qwen2.5-7b"], choices=sorted(SHAPES))
    parser.add_argument("--users", type=int, default=3, help="users timed with the shared-prefix path")
    parser.add_argument("--naive-users", type=int, default=1, help="users timed with one forward per candidate")
    parser.add_argument("--chunk-shared", type=int, default=256)
    parser.add_argument("--chunk-naive", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/catalog_scoring.json"))
    args = parser.parse_args()
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.meta = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__}
    rows: list[dict] = []
    for shape in args.shapes:
        run_shape(shape, args, rows)
    print("\n| shape | candidates | prefix tokens | suffix tokens (mean) | naive users/s | shared-prefix users/s | "
          "speed-up | max abs P(Yes) diff | margin rel. err | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        print(f"| {r['shape']} | {r['candidates']} | {r['prefix_tokens']} | {r['mean_suffix_tokens']:.0f} | "
              f"{r['naive_users_per_s']:.3f} | {r['shared_users_per_s']:.3f} | {r['speedup']:.1f}x | "
              f"{r['max_abs_p_yes_diff']:.4f} | {r['margin_rel_err']:.4f} | {peak} |")


if __name__ == "__main__":
    main()
