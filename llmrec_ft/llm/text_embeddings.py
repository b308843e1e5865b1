"""Item text embeddings: one pooled hidden state of the backbone per item title/metadata.

FreLLM4Rec and SpecTran both describe items to the LLM through its own representation of the
item text. Encoding a catalogue is the slowest step of those recipes on CPU and it only depends on
(model, texts, pooling, layer), so the result is cached on disk as safetensors under
``cache_dir()/text_embeddings/<sha256>.safetensors`` and reused by every run and every seed.

The cache key is the *model name* the caller passes (a Hub id, a local dir, or an embedded name),
not a hash of the weights: callers must give a different name to a fine-tuned backbone.
"""

from __future__ import annotations

import hashlib
import json

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from llmrec_ft.assets import cache_dir
from llmrec_ft.io import atomic_path

POOLINGS = ("mean", "last")


def text_embedding_cache_path(texts: list[str], model_name: str, layer: int, pooling: str, max_length: int):
    key = json.dumps({"model": model_name, "texts": texts, "layer": layer, "pooling": pooling,
                      "max_length": max_length}, ensure_ascii=False)
    return cache_dir() / "text_embeddings" / f"{hashlib.sha256(key.encode()).hexdigest()}.safetensors"


def _pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """``mean``: average over real tokens; ``last``: the last real token (the causal LM's summary)."""
    if pooling == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1)
    last = mask.sum(1) - 1  # batches are right-padded by _encode_batch
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


@torch.no_grad()
def _encode_batch(model, token_ids: list[list[int]], pad_id: int, layer: int, pooling: str) -> torch.Tensor:
    device = next(model.parameters()).device
    width = max(len(ids) for ids in token_ids)
    # Right padding keeps every real token at its usual position (0..n-1), whatever the model's
    # position-id logic; the padded tail is masked out of attention and of the pooling.
    input_ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    # The decoder alone: a causal LM head would compute [B, L, vocab] logits we never use.
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    out = decoder(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
    return _pool(out.hidden_states[layer], mask, pooling).float().cpu()


def item_text_embeddings(model, tokenizer, texts: list[str], model_name: str, batch_size: int = 16,
                         layer: int = -1, pooling: str = "mean", max_length: int = 128) -> torch.Tensor:
    """Return a ``[len(texts), hidden]`` float32 tensor: the pooled ``hidden_states[layer]`` of each text.

    ``layer=-1`` is the last hidden state (after the final norm in Llama/Qwen2/Mistral);
    ``pooling`` is ``"mean"`` over non-pad tokens or ``"last"`` (last non-pad token).
    Texts are truncated to ``max_length`` tokens. Cached on disk; see the module docstring.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}: expected one of {POOLINGS}")
    if not texts:
        raise ValueError("item_text_embeddings: texts is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    path = text_embedding_cache_path(list(texts), model_name, layer, pooling, max_length)
    if path.exists():
        return load_file(path)["embeddings"]

    token_ids = tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    for row, (text, ids) in enumerate(zip(texts, token_ids)):
        if not ids:
            raise ValueError(f"item_text_embeddings: texts[{row}] ({text!r}) has no tokens")
    pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)

    was_training = model.training
    model.eval()  # no dropout: the same text must always give the same vector
    # Longest-first batching wastes little compute on padding; rows are put back in input order.
    order = sorted(range(len(texts)), key=lambda i: -len(token_ids[i]))
    pooled = [None] * len(texts)
    try:
        for start in tqdm(range(0, len(order), batch_size), desc=f"text embeddings ({model_name})", unit="batch"):
            rows = order[start : start + batch_size]
            for row, vector in zip(rows, _encode_batch(model, [token_ids[i] for i in rows], pad_id, layer, pooling)):
                pooled[row] = vector
    finally:
        model.train(was_training)
    embeddings = torch.stack(pooled).contiguous()

    with atomic_path(path) as tmp:
        save_file({"embeddings": embeddings}, str(tmp), metadata={"model": model_name, "pooling": pooling,
                                                                 "layer": str(layer), "count": str(len(texts))})
    return embeddings
