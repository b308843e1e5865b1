"""Catalogue-constrained beam search: transformers ``generate`` vs our decoder, one lever per row (issue 14).

    python benchmarks/generative_decoding.py --shape qwen2.5-0.5b --items 12095 --levels 3 --prompt-len 256 \\
        --users 128 --batch-users 32 64 128 --beams 20 50 --device cuda --dtype bf16

A random-initialised model of a real shape (built from the config dict below: no download) and a synthetic
catalogue of ``--items`` semantic IDs (``--levels`` levels of 256 codes + the collision level, uniformly
random, so ~47 items share a first code as in Amazon Beauty's 12,101 items) whose code tokens are the last
vocabulary ids. ``--users`` random prompts of ``--prompt-len`` tokens. Rows, each adding one lever:

1. ``generate`` + per-beam Python constraint: ``prefix_allowed_tokens_fn`` over a dict prefix -> allowed tokens
   (what LC-Rec and MiniOneRec do); ``min(--batch-users)`` (at most 32) prompts per ``generate`` call (rows 1-2).
2. ``generate`` + vectorised trie ``LogitsProcessor`` (``hf_generate_beam_search``, the reference for agreement).
3. ours, prefill each prompt once and expand its KV cache to the beams; one user per batch.
4. + many users per batch: one row per ``--batch-users`` value (at 32 users the 0.5B shape is bound by per-call
   host overhead on an H200: 120 ms per call for one user, 127 ms for 32 at 50 beams; bigger batches amortise it).
5. + early stop: a user leaves the batch once its list is final (largest batch). No effect on fixed-length
   semantic IDs, whose beams all finish at the last level: there this row repeats row 4's computation, so it
   shows the timing noise and, as ``rerun_identical_top10``, whether the kernels give the same lists twice.
6. + static KV cache and compiled decode steps: row 5 with ``compile_decode`` (a transformers ``StaticCache`` and
   ``torch.compile(dynamic=False)`` of the decode forward; ``mode="reduce-overhead"``, i.e. CUDA graphs, with
   ``--compile-backend inductor``, the default on CUDA; ``cudagraphs``: CUDA graphs without inductor's kernels).
   Off by default on CPU, where inductor compiles C++ for a minute even for ``--shape tiny``; ``--compile-backend
   eager`` checks the plumbing there (dynamo only, no speed-up). The row's JSON has dynamo's ``graph_breaks``.
7. + tree attention: beams keep sharing the one prompt cache (4-D ancestry mask) instead of W copies (largest
   batch; ``kv_sharing="tree"``, the memory-saving option).

Each row is timed once over all ``--users`` prompts after one warm-up batch of its own batch size, timed apart as
``warmup_s`` (for row 6: tracing, compiling and recording the CUDA graph, once per beam width as the graph's
shape is ``users/batch x beams`` rows). Printed and written to JSON: users/s, speed-up over row 2, peak GPU
memory, and agreement with row 2: share of users whose top-10 list is identical, mean top-10 overlap; and what
makes lists differ: the median |score difference| of items both lists hold (0 = bitwise the same numbers), the
share of users whose scores are bitwise equal, the median smallest gap between consecutive scores of the
reference's top 11 (the margin that decides the order), and the share of users with an exact tie at the first
step's beam boundary (``first_step_boundary_ties``).
Then p50/p99 latency of one user at 20 beams (default ``kv_sharing``) and the projected time for the 22,363
Amazon Beauty test users. Runs on CPU with ``--shape tiny`` in well under a minute.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, CompileConfig, GenerationConfig, LlamaConfig

from llmrec_ft.generative.decoding import constrained_beam_search, hf_generate_beam_search, release_static_cache
from llmrec_ft.generative.semantic_ids import SemanticIDs
from llmrec_ft.generative.trie import CatalogTrie
from llmrec_ft.io import write_json
from model_shapes import REAL_SHAPES  # noqa: E402  (benchmarks/, next to this script)

BEAUTY_TEST_USERS = 22_363
SHAPES = {
    **REAL_SHAPES,
    "tiny": (LlamaConfig, dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, vocab_size=4096, max_position_embeddings=1024)),
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def build_model(shape: str, device: str, dtype: torch.dtype):
    config_class, values = SHAPES[shape]
    config = config_class(**values, attention_dropout=0.0, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def synthetic_catalogue(num_items: int, levels: int, vocab_size: int, seed: int = 0) -> torch.Tensor:
    """``[num_items, levels + 1]`` token ids of random 256-code semantic IDs, placed at the end of the vocabulary."""
    rng = np.random.default_rng(seed)
    sids = SemanticIDs.with_collision_level(rng.integers(0, 256, size=(num_items, levels)), [256] * levels)
    offsets = np.cumsum([0] + sids.codebook_sizes[:-1]) + vocab_size - sum(sids.codebook_sizes)
    return torch.as_tensor(sids.codes + offsets)


def python_prefix_constraint(item_token_ids: torch.Tensor, prompt_length: int):
    """LC-Rec / MiniOneRec style: a dict from each prefix (tuple) to its allowed next tokens, queried per beam."""
    allowed: dict[tuple, set] = {}
    for row in item_token_ids.tolist():
        for t in range(len(row)):
            allowed.setdefault(tuple(row[:t]), set()).add(row[t])
    allowed = {prefix: sorted(tokens) for prefix, tokens in allowed.items()}

    def prefix_allowed_tokens_fn(batch_id: int, sentence: torch.Tensor) -> list[int]:
        return allowed.get(tuple(sentence[prompt_length:].tolist()), [])

    return prefix_allowed_tokens_fn


@torch.no_grad()
def hf_python_beam_search(model, trie, input_ids, attention_mask, num_beams, top_k, item_token_ids):
    """Row 1: ``generate`` with ``prefix_allowed_tokens_fn`` (a Python call per beam per step)."""
    config = GenerationConfig(num_beams=num_beams, num_return_sequences=num_beams, do_sample=False,
                              max_new_tokens=trie.max_len, length_penalty=0.0, early_stopping=False,
                              pad_token_id=0, eos_token_id=1, return_dict_in_generate=True, output_scores=True)
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                         prefix_allowed_tokens_fn=python_prefix_constraint(item_token_ids.cpu(), input_ids.shape[1]))
    items = trie.items_of(out.sequences[:, input_ids.shape[1]:]).view(len(input_ids), num_beams)
    scores = out.sequences_scores.view(len(input_ids), num_beams)
    order = torch.argsort(torch.where(items >= 0, scores, float("-inf")), dim=1, descending=True)
    return items.gather(1, order)[:, :top_k], scores.gather(1, order)[:, :top_k]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_row(name, search, prompts, batch_size, device):
    """Time ``search(ids, mask)`` over all prompts in batches of ``batch_size`` after one warm-up batch (timed
    apart: it holds any compilation); returns the found items and scores ``[users, k]`` and the row's stats."""
    ids, mask = prompts
    start = time.perf_counter()
    search(ids[:batch_size], mask[:batch_size])
    sync(device)
    warmup = time.perf_counter() - start
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    found = []
    for first in range(0, len(ids), batch_size):
        found.append(search(ids[first:first + batch_size], mask[first:first + batch_size]))
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    items, scores = (torch.cat([f[i] for f in found]).cpu() for i in (0, 1))
    return (items, scores.float()), {"row": name, "seconds": seconds, "users_per_s": len(ids) / seconds,
                                     "peak_mem_gib": peak, "warmup_s": warmup}


def agreement(found, reference, k: int = 10) -> dict:
    """Top-``k`` agreement of ``found`` with ``reference`` (each ``(items, scores)`` ``[users, >= k]``) and the
    numbers that explain a disagreement (see the module docstring)."""
    (items, scores), (ref_items, ref_scores) = found, reference
    same = (items[:, :k] == ref_items[:, :k]).all(dim=1)
    overlap, differences, bitwise = [], [], []
    for user in range(len(items)):
        ours = dict(zip(items[user, :k].tolist(), scores[user, :k].tolist()))
        theirs = dict(zip(ref_items[user, :k].tolist(), ref_scores[user, :k].tolist()))
        common = [item for item in ours if item in theirs and item >= 0]
        overlap.append(len(common) / k)
        differences += [abs(ours[item] - theirs[item]) for item in common]
        bitwise.append(all(ours[item] == theirs[item] for item in common))
    top = ref_scores[:, : k + 1]
    gaps = (top[:, :-1] - top[:, 1:]).min(dim=1).values  # smallest margin between consecutive ranks
    return {"identical_top10": same.float().mean().item(), "top10_overlap": float(np.mean(overlap)),
            "score_abs_diff_median": float(np.median(differences)) if differences else None,
            "users_bitwise_equal_scores": float(np.mean(bitwise)),
            "reference_min_gap_top11_median": float(gaps.median()),
            "reference_exact_tie_share": float((gaps == 0).float().mean())}


@torch.no_grad()
def first_step_boundary_ties(model, item_token_ids: torch.Tensor, prompts, beams: int, batch_size: int) -> float | None:
    """Share of users whose ``beams``-th and next best first item token have exactly equal log-probabilities, so
    which of the two prefixes survives the first step is up to ``topk``'s tie order (such a tie changes a list
    when two paths break it differently; later steps tie too). ``None`` with too few distinct first tokens."""
    ids, mask = prompts
    first = torch.unique(item_token_ids[:, 0]).to(ids.device)
    if len(first) <= beams:
        return None
    ties = []
    for start in range(0, len(ids), batch_size):
        logits = model(input_ids=ids[start:start + batch_size], attention_mask=mask[start:start + batch_size],
                       logits_to_keep=1).logits[:, -1]
        ranked = torch.log_softmax(logits.float(), dim=-1)[:, first].topk(beams + 1, dim=1).values
        ties.append(ranked[:, beams - 1] == ranked[:, beams])
    return torch.cat(ties).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="qwen2.5-0.5b", choices=sorted(SHAPES))
    parser.add_argument("--items", type=int, default=12095)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--users", type=int, default=128, help="users timed (the same prompts in every row)")
    parser.add_argument("--batch-users", type=int, nargs="+", default=[32, 64, 128],
                        help="users per batch, one row each (capped at --users)")
    parser.add_argument("--beams", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--latency-users", type=int, default=32, help="single-user requests timed for p50/p99")
    parser.add_argument("--skip-python-constraint", action="store_true", help="drop row 1 (slow on a 7B shape)")
    parser.add_argument("--compile-backend", choices=["inductor", "cudagraphs", "aot_eager", "eager", "none"],
                        help="torch.compile backend of the compiled-decode row; 'none' drops the row "
                             "(default: inductor on cuda, none on cpu)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/generative_decoding.json"))
    args = parser.parse_args()
    device, dtype = args.device, DTYPES[args.dtype]
    backend = args.compile_backend or ("inductor" if device == "cuda" else "none")
    compile_config = CompileConfig(dynamic=False, backend=backend,
                                   mode="reduce-overhead" if backend == "inductor" else "default")
    batch_sizes = sorted({min(b, args.users) for b in args.batch_users})
    batch_users = batch_sizes[-1]
    hf_batch = min(batch_sizes[0], 32)  # generate rows: at most 32 users per call, the baseline
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    model = build_model(args.shape, device, dtype)
    item_token_ids = synthetic_catalogue(args.items, args.levels, model.config.vocab_size)
    trie = CatalogTrie(item_token_ids, model.config.vocab_size).to(device)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(100, item_token_ids.min().item(), (args.users, args.prompt_len), generator=generator).to(device)
    prompts = (ids, torch.ones_like(ids))
    meta = {"shape": args.shape, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "dtype": args.dtype, "items": args.items, "levels": args.levels, "prompt_len": args.prompt_len,
            "users": args.users, "batch_users": batch_sizes, "generate_batch_users": hf_batch,
            "compile_backend": backend,
            "trie_nodes": trie.num_nodes, "torch": torch.__version__,
            "transformers": __import__("transformers").__version__}
    print(json.dumps(meta), flush=True)
    rows = []
    for beams in args.beams:
        top_k = min(11, beams)  # the 11th score tells how close the top-10 boundary is
        ladder = []
        if not args.skip_python_constraint:
            ladder.append(("generate + per-beam python constraint", hf_batch,
                           lambda i, m: hf_python_beam_search(model, trie, i, m, beams, top_k, item_token_ids)))
        ladder += [
            ("generate + vectorised trie processor", hf_batch,
             lambda i, m: hf_generate_beam_search(model, trie, i, m, num_beams=beams, top_k=top_k)),
            ("ours: prefill once, expand cache, 1 user/batch", 1,
             lambda i, m: constrained_beam_search(model, trie, i, m, num_beams=beams, top_k=top_k, users_per_batch=1,
                                                  drop_finished_users=False, kv_sharing="expand")),
        ]
        ladder += [
            (f"+ {size} users/batch", size,
             lambda i, m, size=size: constrained_beam_search(model, trie, i, m, num_beams=beams, top_k=top_k,
                                                             users_per_batch=size, drop_finished_users=False,
                                                             kv_sharing="expand"))
            for size in batch_sizes
        ]
        early_stop = f"+ early stop (drop finished users), {batch_users}/batch"
        ladder.append((early_stop, batch_users,
                       lambda i, m: constrained_beam_search(model, trie, i, m, num_beams=beams, top_k=top_k,
                                                            users_per_batch=batch_users, kv_sharing="expand")))
        compiled = f"+ static cache, compiled decode ({backend}), {batch_users}/batch"
        if backend != "none":
            ladder.append((compiled, batch_users,
                           lambda i, m: constrained_beam_search(model, trie, i, m, num_beams=beams, top_k=top_k,
                                                                users_per_batch=batch_users, kv_sharing="expand",
                                                                compile_decode=compile_config)))
        ladder.append((f"+ tree attention (one shared cache), {batch_users}/batch", batch_users,
                       lambda i, m: constrained_beam_search(model, trie, i, m, num_beams=beams, top_k=top_k,
                                                            users_per_batch=batch_users, kv_sharing="tree")))
        results = []
        for name, batch_size, search in ladder:
            found, stats = run_row(name, search, prompts, batch_size, device)
            results.append((found, stats))
            if name == compiled:  # its static cache and CUDA graph pool would count in later rows' peak memory
                stats["graph_breaks"] = sum(torch._dynamo.utils.counters["graph_break"].values())
                release_static_cache(model)
                torch._dynamo.reset()
                torch._dynamo.utils.counters.clear()
        reference = next(found for found, stats in results if stats["row"].startswith("generate + vectorised"))
        hf_speed = next(stats["users_per_s"] for _, stats in results if stats["row"].startswith("generate + vector"))
        ties = first_step_boundary_ties(model, item_token_ids, prompts, beams, hf_batch)
        for found, stats in results:
            stats.update(beams=beams, speedup_vs_generate=stats["users_per_s"] / hf_speed,
                         first_step_boundary_tie_share=ties, **agreement(found, reference))
            rows.append(stats)
        # fixed-length codes: the early-stop row repeats the largest-batch row's computation exactly, so their
        # agreement measures run-to-run nondeterminism of the kernels (100% = deterministic)
        same_batch, early = (found for found, stats in results if stats["row"] in (f"+ {batch_users} users/batch",
                                                                                    early_stop))
        rerun = (same_batch[0][:, :10] == early[0][:, :10]).all(dim=1)
        next(r for r in rows if r["beams"] == beams and r["row"] == early_stop)["rerun_identical_top10"] = (
            rerun.float().mean().item())
    best = {b: max((r for r in rows if r["beams"] == b), key=lambda r: r["users_per_s"]) for b in args.beams}

    # single-user latency at 20 beams (default kv_sharing, one prompt per call)
    latencies = []
    single = lambda i, m: constrained_beam_search(model, trie, i, m, num_beams=20, top_k=10, users_per_batch=1)
    single(ids[:1], prompts[1][:1])
    for user in range(min(args.latency_users, args.users)):
        sync(device)
        start = time.perf_counter()
        single(ids[user:user + 1], prompts[1][user:user + 1])
        sync(device)
        latencies.append(time.perf_counter() - start)
    latency = {"p50_ms": 1000 * float(np.percentile(latencies, 50)),
               "p99_ms": 1000 * float(np.percentile(latencies, 99)),
               "requests": len(latencies)}
    projection = {f"beauty_test_{BEAUTY_TEST_USERS}_users_min_at_{b}_beams":
                  BEAUTY_TEST_USERS / best[b]["users_per_s"] / 60 for b in args.beams}

    print(f"\n{'beams':>5} | {'row':<56} | {'users/s':>8} | {'x gen':>6} | {'peak GiB':>8} | {'warm-up s':>9} | "
          f"{'same top10':>10} | {'overlap':>7} | {'|dscore| p50':>12} | {'bitwise':>7} | {'ref gap p50':>11}")
    for r in rows:
        peak = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "-"
        diff = r["score_abs_diff_median"]
        print(f"{r['beams']:>5} | {r['row']:<56} | {r['users_per_s']:>8.1f} | {r['speedup_vs_generate']:>6.2f} | "
              f"{peak:>8} | {r['warmup_s']:>9.1f} | {r['identical_top10']:>10.1%} | {r['top10_overlap']:>7.1%} | "
              f"{diff if diff is None else f'{diff:.2e}':>12} | {r['users_bitwise_equal_scores']:>7.1%} | "
              f"{r['reference_min_gap_top11_median']:>11.2e}")
    for beams in args.beams:
        rerun = next(r["rerun_identical_top10"] for r in rows if r["beams"] == beams and "rerun_identical_top10" in r)
        print(f"{beams} beams: the same search run twice ({batch_users}/batch rows) gives identical top-10 lists "
              f"for {rerun:.1%} of users")
        ties = next(r["first_step_boundary_tie_share"] for r in rows if r["beams"] == beams)
        if ties is not None:
            print(f"{beams} beams: {ties:.1%} of users have an exact tie between their {beams}th best first code and "
                  f"the next (topk's tie order decides which prefix survives)")
    print(f"\nsingle user, 20 beams: p50 {latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms")
    for key, minutes in projection.items():
        print(f"{key}: {minutes:.1f} min")
    write_json(args.out, {"meta": meta, "rows": rows, "single_user_latency_20_beams": latency,
                          "projection_minutes": projection})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
