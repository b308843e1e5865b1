"""GPU training throughput of the SASRecLLM path against a plain PEFT LoRA loop (GitHub issue 7).

    python benchmarks/train_throughput.py --shapes qwen2.5-0.5b qwen2.5-7b --out benchmarks/results/train_throughput.json

Every model is a random-initialised real shape (bf16 weights, LoRA r=16 on all linear layers, fp32 adapters,
bf16 autocast, fused AdamW, gradient clipping at 1.0 as Trainer does). The data are synthetic Yes/No samples
shaped like SASRecLLM prompts: 150-600 tokens, one ``<|user_cf|>`` slot, an ``<|item_cf|>`` slot after each of
10 history items and after the candidate, one labelled answer token at the end.

Rows, one lever at a time (each row states its settings):

* ``plain``: the issue's baseline -- PEFT LoRA on token ids, right-padded batches, SDPA, loss from
  ``model(labels=...)`` (full-vocabulary fp32 logits at every position);
* ``sasrecllm``: the project's path, ``CollaborativeLM`` (SASRec + projector + injected vectors), first with
  the same padded batches and loss, then adding ``answer_only_loss``, ``PackedCollator`` packing with
  SDPA / flex / varlen attention, PEFT without the fp32 upcast of LoRA inputs, activation checkpointing off /
  on every layer / on every other layer, regional ``torch.compile`` of the decoder layers, larger
  micro-batches, and QLoRA (NF4 base weights through bitsandbytes, when installed).

Throughput counts real (non-pad) tokens. MFU uses the FLOPs the training step *needs*, the same for every
row of a shape, so MFU ratios equal throughput ratios:

    4 * N_linear * tokens          forward (2N) + input gradients (2N) of the frozen decoder linears
  + 6 * N_lora * tokens            LoRA forward + both gradients
  + 6 * L * (heads*head_dim) * sum(s_i^2)   causal attention, forward + 2x backward, per sample
  + 4 * V * d * labelled_tokens     LM head where a label needs it (forward + input gradient)

Recomputation under activation checkpointing and pad tokens are not counted. The issue's table also
counts the LM head at every position for untied heads (+7% FLOPs on Qwen2.5-7B / Llama-3.1-8B), so its
MFU figures read ~7% higher than this formula for the same speed. Peak: 789 TFLOP/s (the issue's
measured bf16 dense rate); the script measures the device's own rate (8192^3 bf16 matmul) and prints it.

Loss check: all rows of a shape with the same samples per step start from the same weights and see the
same batches, so their per-step losses must agree within bf16 noise; the JSON holds every row's losses
and the table the largest deviation from the ``sasrecllm`` padded row.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig

from llmrec_ft.collab.sasrec import SASRec, SASRecConfig
from llmrec_ft.io import write_json
from llmrec_ft.llm.backbone import compile_decoder_layers
from llmrec_ft.llm.collaborative_lm import CollaborativeLM
from llmrec_ft.llm.packing import PackedCollator, register_varlen_attention
from llmrec_ft.llm.projector import CollaborativeProjector
from llmrec_ft.llm.tokens import CollaborativeTokenIds
from llmrec_ft.train.collator import PointwiseCollator
from model_shapes import REAL_SHAPES  # noqa: E402  (benchmarks/, next to this script)

PEAK_TFLOPS = 789.0
NUM_ITEMS, HISTORY = 1682, 10

SHAPES = {
    **REAL_SHAPES,
    # CPU smoke test of this script only
    "tiny": (LlamaConfig, dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, vocab_size=32000, max_position_embeddings=1024)),
}


@dataclass(frozen=True)
class Variant:
    name: str
    path: str = "sasrecllm"  # or "plain"
    samples: int = 8  # prompts per optimizer step (one micro-batch)
    answer_only: bool = False
    packing: str | None = None  # None (right padding), "sdpa", "flex_attention", "varlen"
    lora_input_cast: bool = True  # PEFT's default upcast of LoRA inputs to the fp32 adapter dtype
    checkpointing: str = "off"  # "off", "all", "half" (every other decoder layer)
    compile: bool = False
    qlora: bool = False


def ladder(shape: str, quick: bool) -> list[Variant]:
    """The rows measured for ``shape``: the issue's baselines, then the project's path lever by lever."""
    small = shape in ("qwen2.5-0.5b", "tiny")
    n = 16 if small else 8
    base = Variant("sasrecllm padded", samples=n, checkpointing="off" if small else "all")
    best = replace(base, name="", answer_only=True, packing="varlen", lora_input_cast=False)
    rows = [Variant("plain", path="plain", samples=n, checkpointing="off")]
    if not small:
        rows.append(Variant("plain", path="plain", samples=n, checkpointing="all"))
    if quick:
        return rows + [replace(best, name="sasrecllm best", checkpointing="off")]
    rows += [base,
             replace(base, name="+ answer-only loss", answer_only=True),
             replace(base, name="+ packing (sdpa mask)", answer_only=True, packing="sdpa"),
             replace(base, name="+ packing (flex)", answer_only=True, packing="flex_attention"),
             replace(base, name="+ packing (varlen)", answer_only=True, packing="varlen"),
             replace(best, name="+ no LoRA input upcast")]
    if not small:
        rows += [replace(best, name="+ checkpoint every other layer", checkpointing="half"),
                 replace(best, name="+ no checkpointing", checkpointing="off")]
    fast = replace(best, checkpointing="off")
    rows += [replace(fast, name=f"+ {2 * n} samples/step", samples=2 * n),
             replace(fast, name=f"+ {4 * n} samples/step", samples=4 * n)]
    if not small:
        rows += [replace(best, name=f"+ {4 * n} samples/step, checkpoint half", samples=4 * n, checkpointing="half")]
        rows += [replace(best, name="QLoRA (NF4), checkpoint all", qlora=True)]
    rows += [replace(fast, name="+ torch.compile (layers)", compile=True),
             replace(fast, name=f"+ torch.compile, {2 * n} samples/step", compile=True, samples=2 * n),
             replace(fast, name=f"+ torch.compile, {4 * n} samples/step", compile=True, samples=4 * n)]
    return rows


# ---------------------------------------------------------------------------------------------- data


def synthetic_samples(count: int, vocab: int, token_ids: CollaborativeTokenIds, seed: int) -> list[dict]:
    """Yes/No samples shaped like the yes_no prompt: lengths uniform in [150, 600], slot placeholders
    at realistic places, the answer token labelled."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        length = int(rng.integers(150, 601))
        ids = rng.integers(100, min(vocab - 2, 30000), size=length).tolist()
        slots = np.linspace(20, length - 12, HISTORY + 1).astype(int).tolist()
        ids[5] = token_ids.user
        for position in slots:
            ids[position] = token_ids.item
        items = rng.integers(1, NUM_ITEMS + 1, size=HISTORY + 1).tolist()
        labels = [-100] * (length - 1) + [ids[-1]]
        samples.append({"input_ids": ids, "labels": labels, "cf_history": items[:HISTORY], "cf_items": items})
    return samples


def collate(variant: Variant, samples: list[dict]) -> dict:
    if variant.packing:
        fields = ("cf_history",) if variant.path == "sasrecllm" else ()
        concat = ("cf_items",) if variant.path == "sasrecllm" else ()
        batch = PackedCollator(row_fields=fields, concat_fields=concat)(samples)
    else:
        batch = PointwiseCollator(pad_token_id=0, collaborative=variant.path == "sasrecllm")(samples)
    return batch


# --------------------------------------------------------------------------------------------- model


def model_config(shape: str):
    config_class, values = SHAPES[shape]
    return config_class(**values, attention_dropout=0.0, use_cache=False)


def quantize_nf4_(model: torch.nn.Module) -> None:
    """Replace every decoder linear layer by a bitsandbytes NF4 ``Linear4bit`` holding the same (random) weights.

    ``from_pretrained(quantization_config=...)`` quantizes while loading a checkpoint; a random-init shape
    has none, so the layers are swapped in place (same result, no 15 GB round trip through the disk)."""
    import bitsandbytes as bnb

    decoder = model.get_decoder()
    for name, module in list(decoder.named_modules()):
        if isinstance(module, torch.nn.Linear):
            parent = decoder.get_submodule(name.rsplit(".", 1)[0])
            quantized = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=module.bias is not None,
                                          compute_dtype=torch.bfloat16, quant_type="nf4", device="meta")
            quantized.weight = bnb.nn.Params4bit(module.weight.data, requires_grad=False, quant_type="nf4")
            if module.bias is not None:
                quantized.bias = module.bias
            setattr(parent, name.rsplit(".", 1)[1], quantized.to(module.weight.device))
    torch.cuda.empty_cache()


def build(shape: str, device: str, qlora: bool):
    config = model_config(shape)
    torch.manual_seed(0)
    with torch.device(device):
        lm = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    if qlora:
        quantize_nf4_(lm)
    lm = get_peft_model(lm, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
    token_ids = CollaborativeTokenIds(user=config.vocab_size - 2, item=config.vocab_size - 1)
    sasrec = SASRec(SASRecConfig(num_items=NUM_ITEMS, hidden_size=64, max_len=50, dropout=0.0)).to(device)
    sasrec.requires_grad_(False)  # pre-trained and frozen in the joint stage, as in dual-stage training
    projector = CollaborativeProjector(64, 320, config.hidden_size).to(device)
    projector.scale_to_embedding_norm_(sasrec.item_embeddings.weight[1:], lm.get_input_embeddings().weight)
    return CollaborativeLM(lm, projector, sasrec, token_ids), token_ids


def set_checkpointing(model: CollaborativeLM, mode: str) -> None:
    base = model.lm.get_base_model()
    if mode == "off":
        base.gradient_checkpointing_disable()
        return
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if mode == "half":
        for index, layer in enumerate(base.get_decoder().layers):
            layer.gradient_checkpointing = index % 2 == 0


def step_flops(config, lengths: list[int], labelled: int, lora_params: int) -> float:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    d, attn, kv = config.hidden_size, config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    linear = config.num_hidden_layers * (2 * d * attn + 2 * d * kv + 3 * d * config.intermediate_size)
    tokens = sum(lengths)
    attention = 6 * config.num_hidden_layers * attn * sum(s * s for s in lengths)
    return 4 * linear * tokens + 6 * lora_params * tokens + attention + 4 * config.vocab_size * d * labelled


# ----------------------------------------------------------------------------------------------- run


def run_variant(model, variant: Variant, batches: list[dict], device: str, warmup: int) -> dict:
    lm_base = model.lm.get_base_model()
    attn = {"varlen": register_varlen_attention(), "flex_attention": "flex_attention"}.get(variant.packing, "sdpa")
    lm_base.set_attn_implementation(attn)
    set_checkpointing(model, variant.checkpointing)
    model.answer_only_loss = variant.answer_only
    if variant.compile:
        compile_decoder_layers(model.lm)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device == "cuda")
    model.train()
    losses, times = [], []
    if variant.lora_input_cast:
        cast = contextlib.nullcontext()
    else:  # under bf16 autocast the matmuls run in bf16 anyway; skip PEFT's fp32 copy of every LoRA input
        from peft.helpers import disable_input_dtype_casting

        cast = disable_input_dtype_casting(model.lm)
    with cast:
        for index, cpu_batch in enumerate(batches):
            start = time.perf_counter()
            batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in cpu_batch.items()}
            with torch.autocast(device_type=device, dtype=torch.bfloat16):
                if variant.path == "plain":
                    batch = {k: v for k, v in batch.items() if not k.startswith("cf_")}
                    loss = model.lm(**batch, use_cache=False).loss
                else:
                    loss = model(**batch, use_cache=False).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())  # synchronizes: the step is complete
            times.append(time.perf_counter() - start)
            if index + 1 == warmup and device == "cuda":
                torch.cuda.reset_peak_memory_stats()
    timed = times[warmup:]
    return {"losses": losses, "step_s": float(np.median(timed)), "mean_step_s": float(np.mean(timed))}


def measured_peak_tflops(device: str) -> float | None:
    if device != "cuda":
        return None
    a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * 8192**3 * 20 / (start.elapsed_time(end) / 1e3) / 1e12


def run_shape(shape: str, args, results: list[dict]) -> None:
    device = args.device
    variants = ladder(shape, args.quick)
    if args.only:
        variants = [v for v in variants if any(key in v.name for key in args.only)]
    config = model_config(shape)
    model = token_ids = initial = None
    built_qlora = None
    for variant in variants:
        if variant.qlora and not _bitsandbytes_available():
            results.append({"shape": shape, **asdict(variant), "error": "bitsandbytes not installed"})
            continue
        if built_qlora != variant.qlora:
            del model
            gc.collect()
            torch.cuda.empty_cache() if device == "cuda" else None
            model, token_ids = build(shape, device, variant.qlora)
            initial = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
            built_qlora = variant.qlora
        model.load_state_dict(initial, strict=False)
        steps = args.warmup + args.steps
        samples = synthetic_samples(steps * variant.samples, config.vocab_size, token_ids, seed=args.seed)
        batches = [collate(variant, samples[i * variant.samples:(i + 1) * variant.samples]) for i in range(steps)]
        lengths = [[len(s["input_ids"]) for s in samples[i * variant.samples:(i + 1) * variant.samples]]
                   for i in range(args.warmup, steps)]
        lora_params = sum(p.numel() for n, p in model.lm.named_parameters() if p.requires_grad)
        row = {"shape": shape, **asdict(variant)}
        print(f"[{shape}] {variant.name} ...", flush=True)
        try:
            out = run_variant(model, variant, batches, device, args.warmup)
        except torch.OutOfMemoryError:
            row["error"] = "out of memory"
        except Exception as error:  # one broken lever must not hide the others' numbers
            row["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        else:
            tokens = float(np.mean([sum(step) for step in lengths]))
            flops = float(np.mean([step_flops(config, step, len(step), lora_params) for step in lengths]))
            row.update(out, tokens_per_s=tokens / out["step_s"], mfu=flops / out["step_s"] / (PEAK_TFLOPS * 1e12),
                       peak_gib=torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None)
        finally:
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
        results.append(row)
        print(format_row(row), flush=True)
        write_json(args.out, {"peak_tflops_reference": PEAK_TFLOPS, "rows": results, **args.meta})
    del model
    gc.collect()


def _bitsandbytes_available() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def loss_deviation(row: dict, results: list[dict]) -> float | None:
    reference = next((r for r in results if r["shape"] == row["shape"] and r["name"] == "sasrecllm padded"
                      and "losses" in r), None)
    if reference is None or "losses" not in row or row["samples"] != reference["samples"] or row["path"] != "sasrecllm":
        return None
    return max(abs(a - b) for a, b in zip(row["losses"], reference["losses"]))


def format_row(row: dict, results: list[dict] | None = None) -> str:
    settings = (f"{row['samples']} | {row['checkpointing']} | {row['packing'] or 'padded'} | "
                f"{'answer' if row['answer_only'] else 'full'} | {'yes' if row['compile'] else 'no'}")
    if "error" in row:
        return f"| {row['shape']} | {row['name']} | {settings} | {row['error']} | | | | |"
    deviation = loss_deviation(row, results or [])
    peak = f"{row['peak_gib']:.1f}" if row.get("peak_gib") is not None else "-"
    return (f"| {row['shape']} | {row['name']} | {settings} | {row['tokens_per_s']:,.0f} | {100 * row['mfu']:.1f}% | "
            f"{peak} | {row['losses'][-1]:.4f} | {'-' if deviation is None else f'{deviation:.4f}'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["qwen2.5-0.5b", "qwen2.5-7b"], choices=sorted(SHAPES))
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per row")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="baselines and the best setting only")
    parser.add_argument("--only", nargs="*", help="run only rows whose name contains one of these strings")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train_throughput.json"))
    args = parser.parse_args()
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    args.meta = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                 "torch": torch.__version__, "measured_bf16_tflops": measured_peak_tflops(args.device),
                 "steps": args.steps, "warmup": args.warmup}
    print(json.dumps(args.meta), flush=True)
    results: list[dict] = []
    for shape in args.shapes:
        run_shape(shape, args, results)
    print("\n| shape | row | samples/step | checkpointing | batches | loss | compile | real tokens/s | MFU | "
          "peak GiB | last loss | max loss dev. |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in results:
        print(format_row(row, results))


if __name__ == "__main__":
    main()
