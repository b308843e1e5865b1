"""Item text embeddings: one pooled hidden state of a text encoder per item title/metadata.

FreLLM4Rec and SpecTran both describe items through an encoder's representation of the item text,
and semantic IDs are quantised from such vectors. :func:`embed_item_texts` is the one call they need:
``text_encoder`` is either a sentence encoder (the embedded ``all-minilm-l6-v2``, or a local
sentence-transformers folder) or any causal LM (embedded name, Hub id, local dir). Pooling follows the
encoder type: a sentence encoder is mean-pooled over all real tokens ([CLS] and [SEP] included) and
L2-normalised, the ``Transformer -> Pooling(mean) -> Normalize`` pipeline its ``modules.json``
declares (sentence-transformers docs, "Pooling"; reimplemented, since that package is not a dependency,
and texts are cut at ``max_length=128`` tokens where its ``max_seq_length`` is 256); a causal LM is
pooled by ``mean`` (default) or ``last`` real token of a chosen hidden layer.

Encoding a catalogue is the slowest step of those recipes on CPU and it only depends on
(model, texts, pooling, layer), so the result is cached on disk as safetensors under
``cache_dir()/text_embeddings/<sha256>.safetensors`` and reused by every run and every seed.

The cache key is the *model name* the caller passes (a Hub id, a local dir, or an embedded name),
not a hash of the weights: callers must give a different name to a fine-tuned backbone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer

from llmrec_ft.assets import EMBEDDED_MODELS, cache_dir
from llmrec_ft.io import atomic_path
from llmrec_ft.llm.backbone import embedded_model_dir, load_backbone

POOLINGS = ("mean", "last")
SENTENCE_ENCODER = "all-minilm-l6-v2"


def text_embedding_cache_path(texts: list[str], model_name: str, layer: int, pooling: str, max_length: int,
                              normalize: bool = False):
    key = {"model": model_name, "texts": texts, "layer": layer, "pooling": pooling, "max_length": max_length}
    if normalize:  # only in the key when set, so caches written before the option existed stay valid
        key["normalize"] = True
    key = json.dumps(key, ensure_ascii=False)
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
                         layer: int = -1, pooling: str = "mean", max_length: int = 128,
                         normalize: bool = False) -> torch.Tensor:
    """Return a ``[len(texts), hidden]`` float32 tensor: the pooled ``hidden_states[layer]`` of each text.

    ``layer=-1`` is the last hidden state (after the final norm in Llama/Qwen2/Mistral);
    ``pooling`` is ``"mean"`` over non-pad tokens or ``"last"`` (last non-pad token); ``normalize``
    scales each row to unit L2 norm. Texts are truncated to ``max_length`` tokens. ``model`` and
    ``tokenizer`` may be ``None`` when the result is cached. Cached on disk; see the module docstring.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}: expected one of {POOLINGS}")
    if not texts:
        raise ValueError("item_text_embeddings: texts is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    path = text_embedding_cache_path(list(texts), model_name, layer, pooling, max_length, normalize)
    if path.exists():
        return load_file(path)["embeddings"]
    if model is None or tokenizer is None:
        raise ValueError(f"item_text_embeddings: no cached embeddings for {model_name!r}; pass the model and tokenizer")

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
    embeddings = torch.stack(pooled)
    if normalize:
        embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
    embeddings = embeddings.contiguous()

    with atomic_path(path) as tmp:
        save_file({"embeddings": embeddings}, str(tmp), metadata={"model": model_name, "pooling": pooling,
                                                                 "layer": str(layer), "count": str(len(texts)),
                                                                 "normalize": str(normalize)})
    return embeddings


def encoder_kind(text_encoder: str) -> str:
    """``"sentence_encoder"`` for an embedded sentence encoder or a local sentence-transformers folder
    (it has ``modules.json``); ``"causal_lm"`` for anything else (embedded LM, Hub id, local dir)."""
    if text_encoder in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[text_encoder].kind
    return "sentence_encoder" if (Path(text_encoder) / "modules.json").exists() else "causal_lm"


def load_text_encoder(text_encoder: str):
    """``(model, tokenizer)`` of a text encoder: the bare encoder (``AutoModel``, fp32, eval mode) for a
    sentence encoder, ``load_backbone`` for a causal LM. Raises what those loaders raise."""
    if encoder_kind(text_encoder) == "causal_lm":
        return load_backbone(text_encoder)
    path = embedded_model_dir(text_encoder) if text_encoder in EMBEDDED_MODELS else Path(text_encoder)
    return AutoModel.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


def sentence_embeddings(model, tokenizer, texts: list[str], batch_size: int = 32,
                        max_length: int = 256) -> torch.Tensor:
    """``[len(texts), D]`` unit-norm mean-pooled vectors of a sentence encoder, not cached (for queries)."""
    token_ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    pad_id = tokenizer.pad_token_id or 0
    rows = [_encode_batch(model, token_ids[i : i + batch_size], pad_id, -1, "mean")
            for i in range(0, len(texts), batch_size)]
    return torch.nn.functional.normalize(torch.cat(rows), dim=-1)


def embed_item_texts(texts: list[str], text_encoder: str = SENTENCE_ENCODER, pooling: str | None = None,
                     layer: int = -1, batch_size: int = 32, max_length: int = 128,
                     device: str | torch.device | None = None) -> torch.Tensor:
    """``[len(texts), D]`` float32 embeddings of item texts, cached on disk (a hit loads no model).

    ``text_encoder``: ``"all-minilm-l6-v2"`` (D=384, mean pooling + L2 norm, the sentence-transformers
    recipe; ``pooling`` must be ``None`` or ``"mean"``, ``layer`` -1) or any causal LM accepted by
    ``load_backbone`` (D = its hidden size; ``pooling`` ``"mean"`` (default) or ``"last"`` of
    ``hidden_states[layer]``, not normalised). ``device``: where to run the encoder (default CPU).
    Raises ``ValueError`` for an empty text list, an empty text (named by 1-based row) or a pooling
    the encoder type does not support.
    """
    texts = list(texts)
    empty = [row for row, text in enumerate(texts, start=1) if not text or not str(text).strip()]
    if empty:
        raise ValueError(f"embed_item_texts: text {empty[0]} (1-based) is empty")
    sentence = encoder_kind(text_encoder) == "sentence_encoder"
    if sentence and (pooling not in (None, "mean") or layer != -1):
        raise ValueError(f"{text_encoder} is a sentence encoder: it is mean-pooled on its last layer "
                         f"(got pooling={pooling!r}, layer={layer})")
    pooling = pooling or "mean"
    model = tokenizer = None
    if not text_embedding_cache_path(texts, text_encoder, layer, pooling, max_length, sentence).exists():
        model, tokenizer = load_text_encoder(text_encoder)
        if device is not None:
            model.to(device)
    return item_text_embeddings(model, tokenizer, texts, text_encoder, batch_size=batch_size, layer=layer,
                                pooling=pooling, max_length=max_length, normalize=sentence)
