"""Padding-free batches: every prompt of a micro-batch in one row, attention kept inside each prompt.

Why: recommendation prompts vary from ~150 to ~600 tokens, so a padded batch spends about a third of its
FLOPs on pad tokens. ``PackedCollator`` concatenates the batch into a single ``[1, sum(T_i)]`` row whose
``position_ids`` restart at 0 for every prompt, and adds the sequence boundaries (``cu_seq_lens_*``,
``max_length_*``) that varlen attention kernels take. Transformers forwards these keyword arguments down
to the attention function, and for ``sdpa``/``eager``/``flex_attention`` it derives a block-diagonal mask
from the restarting ``position_ids`` (``masking_utils.find_packed_sequence_indices``), so no prompt ever
attends to another one whatever the backend. Call the model with ``use_cache=False``: transformers skips
that detection when a KV cache exists, and ``use_cache`` defaults to the config's (True) even in training.

Which backend pays on a GPU (measured in ``benchmarks/train_throughput.py``):

* ``sdpa`` builds a dense ``[T, T]`` boolean mask and runs the masked (memory-efficient) kernel over the
  whole packed row: correct, but attention costs ``T^2`` instead of ``sum(T_i^2)``.
* ``flex_attention`` skips the masked blocks, at the price of compiling its kernel.
* ``VARLEN_ATTENTION`` (registered below through transformers' ``AttentionInterface``) calls PyTorch's own
  FlashAttention varlen kernel (``torch.nn.attention.varlen``) with the collator's boundaries: no mask,
  no padding, no extra package. The ``flash-attn`` wheel would do the same through
  ``attn_implementation="flash_attention_2"`` but ships no wheel for the GPU machine's torch/CUDA.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, DataCollatorWithFlattening
from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

VARLEN_ATTENTION = "llmrec_varlen"


@dataclass
class PackedCollator:
    """Collate tokenized samples (``input_ids``, ``labels`` lists) into one padding-free row.

    Per-sample side inputs travel too: ``row_fields`` (e.g. the SASRec history behind a prompt's user
    slot) become one row per sample, ``[N, L]``, padded with 0 on ``row_padding_side`` (left by default,
    as SASRec expects: most recent item in the last column); ``concat_fields`` (e.g.
    the item ids of a prompt's item slots, in order of appearance) are concatenated in sample order,
    ``[1, sum(S_i)]``, which is their order of appearance in the packed row.
    """

    row_fields: tuple[str, ...] = ()
    concat_fields: tuple[str, ...] = ()
    row_padding_side: str = "left"

    def __post_init__(self):
        if self.row_padding_side not in ("left", "right"):
            raise ValueError(f"row_padding_side must be 'left' or 'right', got {self.row_padding_side!r}")
        self._flatten = DataCollatorWithFlattening(return_position_ids=True, return_flash_attn_kwargs=True)

    def __call__(self, features: list[dict]) -> dict:
        if not features:
            raise ValueError("PackedCollator got an empty batch")
        tokens = []
        for index, sample in enumerate(features):
            if "input_ids" not in sample:
                raise KeyError(f"sample {index} of the batch has no 'input_ids'")
            if "labels" in sample and len(sample["labels"]) != len(sample["input_ids"]):
                raise ValueError(f"sample {index}: {len(sample['labels'])} labels for "
                                 f"{len(sample['input_ids'])} input_ids")
            tokens.append({key: sample[key] for key in ("input_ids", "labels") if key in sample})
        batch = self._flatten(tokens)
        for field in self.row_fields:
            rows = [torch.as_tensor(sample[field], dtype=torch.long) for sample in features]
            batch[field] = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=0,
                                                           padding_side=self.row_padding_side)
        for field in self.concat_fields:
            values = [torch.as_tensor(sample[field], dtype=torch.long).reshape(-1) for sample in features]
            batch[field] = torch.cat(values).unsqueeze(0)
        return batch


def _sequence_boundaries(batch: int, length: int, kwargs: dict, device) -> tuple[torch.Tensor, int]:
    """``(cu_seqlens, max_len)`` from the collator's kwargs, else from packed position ids, else one
    sequence per row."""
    if kwargs.get("cu_seq_lens_q") is not None:
        return kwargs["cu_seq_lens_q"].to(device=device, dtype=torch.int32), int(kwargs["max_length_q"])
    position_ids = kwargs.get("position_ids")
    if batch == 1 and position_ids is not None:
        starts = (position_ids.reshape(-1) == 0).nonzero().reshape(-1)
        cu_seqlens = torch.cat([starts, starts.new_tensor([length])]).to(torch.int32)
        return cu_seqlens, int(cu_seqlens.diff().max())
    return torch.arange(0, (batch + 1) * length, length, dtype=torch.int32, device=device), length


_VARLEN_PARAMS = set()
try:  # torch >= 2.10; the keyword for causality changed between 2.10 and 2.11
    from torch.nn.attention.varlen import varlen_attn as _torch_varlen_attn

    _VARLEN_PARAMS = set(inspect.signature(_torch_varlen_attn).parameters)
except ImportError:  # older torch: only the CPU reference path below is available
    _torch_varlen_attn = None


def _flash_varlen(q, k, v, cu_seqlens, max_len, scaling):
    kwargs = {"scale": scaling}
    kwargs.update({"window_size": (-1, 0)} if "window_size" in _VARLEN_PARAMS else {"is_causal": True})
    if q.shape[1] != k.shape[1]:
        if "enable_gqa" in _VARLEN_PARAMS:
            kwargs["enable_gqa"] = True
        else:
            groups = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return _torch_varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len, **kwargs)


def _reference_varlen(q, k, v, cu_seqlens, scaling):
    """One causal SDPA call per sequence: the same function as the kernel, for CPUs and tests."""
    outputs = []
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))
        out = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scaling,
                                             enable_gqa=qs.shape[0] != ks.shape[0])
        outputs.append(out.transpose(0, 1))
    return torch.cat(outputs)


def varlen_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, sliding_window: int | None = None, **kwargs):
    """Transformers attention function (``[B, H, T, D]`` in, ``[B, T, H, D]`` out) over packed rows."""
    if attention_mask is not None:
        raise ValueError(f"attn_implementation={VARLEN_ATTENTION!r} takes padding-free batches (PackedCollator); "
                         "this batch has padding. Pack it, or use attn_implementation='sdpa'")
    if dropout:
        raise ValueError(f"{VARLEN_ATTENTION!r} has no attention dropout; set the config's attention_dropout to 0")
    batch, heads, length, head_dim = query.shape
    cu_seqlens, max_len = _sequence_boundaries(batch, length, kwargs, query.device)
    if sliding_window is not None and max_len > sliding_window:
        raise ValueError(f"a packed sequence of {max_len} tokens exceeds the model's sliding window "
                         f"({sliding_window}); {VARLEN_ATTENTION!r} implements full causal attention only")
    q, k, v = (t.transpose(1, 2).reshape(batch * length, t.shape[1], head_dim) for t in (query, key, value))
    if q.is_cuda and _torch_varlen_attn is not None:
        if q.dtype not in (torch.float16, torch.bfloat16):  # fp32 weights under autocast: RoPE promotes q, k
            if not torch.is_autocast_enabled("cuda"):
                raise ValueError(f"{VARLEN_ATTENTION!r} runs in bf16/fp16: load the model in bf16 or train with bf16")
            dtype = torch.get_autocast_dtype("cuda")
            out = _flash_varlen(q.to(dtype), k.to(dtype), v.to(dtype), cu_seqlens, max_len, scaling).to(q.dtype)
        else:
            out = _flash_varlen(q, k, v, cu_seqlens, max_len, scaling)
    else:
        out = _reference_varlen(q, k, v, cu_seqlens, scaling)
    return out.reshape(batch, length, heads, head_dim), None


def register_varlen_attention() -> str:
    """Make ``attn_implementation=VARLEN_ATTENTION`` known to transformers; returns the name.

    The mask function is FlashAttention's: it yields no mask for packed rows and the 2D padding mask
    otherwise, which ``varlen_attention_forward`` rejects with a clear message.
    """
    AttentionInterface.register(VARLEN_ATTENTION, varlen_attention_forward)
    AttentionMaskInterface.register(VARLEN_ATTENTION, flash_attention_mask)
    return VARLEN_ATTENTION


@contextlib.contextmanager
def padded_batch_attention(model: torch.nn.Module, fallback: str = "sdpa"):
    """Run a ``VARLEN_ATTENTION`` model on padded batches (scoring, generation) with ``fallback`` meanwhile.

    ``model`` is an HF causal LM, PEFT-wrapped or not, or a wrapper holding one as ``.lm``; other
    attention implementations are left alone.
    """
    lm = getattr(model, "lm", model)
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    current = base.config._attn_implementation
    if current != VARLEN_ATTENTION:
        yield
        return
    base.set_attn_implementation(fallback)
    try:
        yield
    finally:
        base.set_attn_implementation(current)
