"""Tiny randomly initialised causal LMs with a real tokenizer, saved as ordinary local checkpoints.

Why: the SASRecLLM recipe's plumbing (prompts, placeholders, LoRA, TRL, checkpoints, resume, artifacts) is
the same for a 2-layer, 64-wide model as for Qwen/Llama/Mistral, but runs in seconds on a CPU. A saved
directory goes anywhere a model name goes (``model_name_or_path: /tmp/tiny-llama``), so tests and smoke
runs exercise the real code path, ``load_backbone`` included. The tokenizer is borrowed from the embedded
SmolLM2 (or any local/Hub tokenizer) so prompts tokenize like the real thing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config
from transformers import Qwen2ForCausalLM

from llmrec_ft.io import atomic_path
from llmrec_ft.llm.backbone import EMBEDDED_MODEL, embedded_model_dir

ARCHITECTURES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM),
                 "mistral": (MistralConfig, MistralForCausalLM)}


def save_tiny_backbone(directory: str | Path, architecture: str = "llama", tokenizer_source: str = EMBEDDED_MODEL,
                       hidden_size: int = 64, num_layers: int = 2, seed: int = 0,
                       tie_word_embeddings: bool = True) -> Path:
    """Write a random ``architecture`` LM (``hidden_size`` wide, ``num_layers`` deep) and a tokenizer.
    ``tie_word_embeddings=False`` gives the LM head its own weight, as in Llama-3-8B or Qwen2.5-7B."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, got {architecture!r}")
    source = embedded_model_dir() if tokenizer_source == EMBEDDED_MODEL else tokenizer_source
    tokenizer = AutoTokenizer.from_pretrained(source)
    config_class, model_class = ARCHITECTURES[architecture]
    config = config_class(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                          num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=2048, tie_word_embeddings=tie_word_embeddings,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = model_class(config)
    with atomic_path(directory) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(directory)


def tiny_collaborative_lm(backbone_dir: str | Path, num_items: int, collab_hidden: int = 16, lora_r: int = 4,
                          seed: int = 0, collab_model: str = "sasrec"):
    """``(TrainableCollaborativeLM, tokenizer)``: the backbone in ``backbone_dir`` with the placeholder tokens,
    a LoRA adapter on the attention projections, a random 1-block ``collab_model`` (``sasrec`` or ``hstu``)
    and a projector -- the same assembly as the recipe, in miniature."""
    from peft import LoraConfig, get_peft_model

    from llmrec_ft.collab import HSTU, HSTUConfig, SASRec, SASRecConfig
    from llmrec_ft.llm.backbone import load_backbone
    from llmrec_ft.llm.projector import CollaborativeProjector
    from llmrec_ft.llm.tokens import add_collaborative_tokens
    from llmrec_ft.train.trainer import TrainableCollaborativeLM

    torch.manual_seed(seed)
    lm, tokenizer = load_backbone(str(backbone_dir))
    token_ids = add_collaborative_tokens(tokenizer, lm)
    lm = get_peft_model(lm, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules=["q_proj", "v_proj"],
                                       lora_dropout=0.0, task_type="CAUSAL_LM"))
    model_class, config_class = {"sasrec": (SASRec, SASRecConfig), "hstu": (HSTU, HSTUConfig)}[collab_model]
    sasrec = model_class(config_class(num_items=num_items, hidden_size=collab_hidden, num_blocks=1, max_len=50))
    width = lm.get_input_embeddings().embedding_dim
    projector = CollaborativeProjector(collab_hidden, 2 * collab_hidden, width)
    return TrainableCollaborativeLM(lm, projector, sasrec, token_ids), tokenizer
