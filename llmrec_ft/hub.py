"""Artifacts of a hybrid (SASRecLLM) run: one folder that reloads to the same scores, pushable to the Hub.

Layout (what ``CollaborativeLM.save_pretrained`` writes, plus what a user needs to reuse it)::

    adapter_config.json, adapter_model.safetensors   PEFT LoRA adapter (load on the base model)
    projector.safetensors, collaborative_lm.json     collaborative projector + placeholder token ids
    collab_model/config.json, model.safetensors      the SASRec (or HSTU) the projector was trained with
    tokenizer.json, tokenizer_config.json, ...       tokenizer with <|user_cf|> / <|item_cf|> added
    config.yaml                                      the fully resolved recipe config
    metrics.json                                     test metrics of this run
    README.md                                        model card

The folder is written atomically. ``push_to_hub`` uploads it with ``huggingface_hub.HfApi`` --
``create_repo(exist_ok=True)`` then ``upload_folder``, the calls ``transformers.Trainer.push_to_hub`` makes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import yaml
from huggingface_hub import HfApi

from llmrec_ft.collab import load_id_model
from llmrec_ft.assets import EMBEDDED_MODELS
from llmrec_ft.io import atomic_path
from llmrec_ft.llm.backbone import load_backbone
from llmrec_ft.llm.collaborative_lm import (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, COLLAB_MODEL_DIR, CONFIG_NAME,
                                            CollaborativeLM, missing_saved_files)

logger = logging.getLogger(__name__)
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"


def model_card(config: dict, metrics: dict) -> str:
    """A Hub model card: metadata header, the metrics table, and how to reload the artifacts."""
    base_model = config.get("model_name_or_path", "unknown")
    generative = config.get("recipe") == "generative"
    header = {"library_name": "peft", "tags": ["llmrec-ft", "generative" if generative else "sasrecllm",
                                               "recommendation", "lora", "trl"],
              "pipeline_tag": "text-generation"}
    if base_model in EMBEDDED_MODELS:  # an embedded copy is the dequantised GGUF of this Hub model
        header["base_model"] = EMBEDDED_MODELS[base_model].upstream
    elif base_model and not Path(str(base_model)).exists():
        header["base_model"] = base_model
    rows = [f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |"
            for name, value in sorted(_flatten(metrics).items())]
    return "\n".join([
        "---", yaml.safe_dump(header, sort_keys=True).strip(), "---", "",
        f"# {'Generative recommender' if generative else 'SASRecLLM'} on {config.get('dataset', 'unknown data')} "
        f"({base_model})", "",
        (f"A LoRA adapter trained with llmrec-ft's generative recipe to write the next item's "
         f"{'semantic-ID codes' if config.get('task') == 'next_sid' else 'title'} under catalogue-constrained beam "
         "search (`semantic_ids/` holds the item codes, `catalog.json` the item ids and titles)." if generative else
         "A hybrid sequential recommender trained with llmrec-ft's SASRecLLM recipe (arXiv 2507.05733): "
         "SASRec user/item embeddings are projected into the LLM's token space and a LoRA "
         f"adapter answers Yes/No to \"will the user like this item?\". Schedule: `{config.get('schedule')}`."),
        "", "## Test metrics", "", "| metric | value |", "| --- | --- |", *rows, "",
        "## Load", "", "```python", "from llmrec_ft.recommender import Recommender",
        "recommender = Recommender.from_pretrained(\"path/or/hub-id\")",
        "item_ids, scores = recommender.recommend([[\"raw item id\", ...]], k=10)", "```", "",
        "The base model is loaded from `model_name_or_path` in `config.yaml`; the adapter, projector and SASRec "
        "checkpoint come from this folder.", ""])


def _flatten(metrics: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}/"))
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            flat[name] = value
    return flat


def save_artifacts(directory: str | Path, model_dir: str | Path, tokenizer, config: dict, metrics: dict) -> Path:
    """Write the artifact folder (see module docstring) atomically; returns its path.

    ``model_dir`` is a ``CollaborativeLM.save_pretrained`` folder (a finished stage's, see
    ``llmrec_ft.train.schedules.final_model_dir``): copying what Trainer saved, rather than saving the live
    model again, is what works when the live weights are FSDP shards or ZeRO-3 partitions."""
    directory, model_dir = Path(directory), Path(model_dir)
    if (model_dir / CONFIG_NAME).exists():  # a CollaborativeLM folder: adapter + projector (+ SASRec)
        missing = missing_saved_files(model_dir, with_collab_model=True)
    else:  # a plain PEFT adapter folder (generative models without collaborative tokens)
        missing = [name for name in (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME) if not (model_dir / name).exists()]
    if missing:
        raise FileNotFoundError(f"{model_dir}: not a complete CollaborativeLM.save_pretrained or PEFT adapter "
                                f"folder, missing {missing}")
    with atomic_path(directory) as tmp:
        shutil.copytree(model_dir, tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=True))
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True, default=str) + "\n")
        (tmp / "README.md").write_text(model_card(config, metrics))
    return directory


def load_artifacts(directory: str | Path, is_trainable: bool = False):
    """``(model, tokenizer, config)`` from an artifact folder: base model per ``config.yaml`` (same dtype and
    attention kernel), plus the adapter, projector and SASRec saved here.

    ``FileNotFoundError`` naming every missing file (checked before the base model is loaded) and ``ValueError``
    for an adapter file that lacks some LoRA tensors: an incomplete folder never loads as the bare base model."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    missing = [name for name in (CONFIG_FILE, f"{COLLAB_MODEL_DIR}/config.json") if not (directory / name).exists()]
    missing += missing_saved_files(directory, with_collab_model=True)
    if missing:
        raise FileNotFoundError(f"{directory}: not a complete SASRecLLM artifact folder, missing {missing}")
    config = yaml.safe_load((directory / CONFIG_FILE).read_text())
    lm, _ = load_backbone(config["model_name_or_path"], dtype=config.get("dtype", "float32"),
                          attn_implementation=config.get("attn_implementation", "sdpa"))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    collab_model = load_id_model(directory / COLLAB_MODEL_DIR)
    model = CollaborativeLM.from_pretrained(directory, lm, tokenizer, collab_model, is_trainable=is_trainable)
    return model, tokenizer, config


def push_artifacts(directory: str | Path, training_args) -> str | None:
    """Upload the artifact folder as ``--push_to_hub --hub_model_id you/name`` asks (Trainer's argument names:
    ``hub_model_id``, ``hub_private_repo``, ``hub_token``); returns the commit URL, or None when
    ``HF_HUB_OFFLINE`` is set (the folder already has the Hub repo's layout). ``ValueError`` without
    ``hub_model_id``."""
    if not training_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id <user>/<repo>")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        logger.warning("HF_HUB_OFFLINE is set: artifacts stay in %s (same layout as the Hub repo)", directory)
        return None
    url = push_to_hub(training_args.hub_model_id, directory, private=bool(training_args.hub_private_repo),
                      token=training_args.hub_token)
    logger.warning("pushed %s", url)
    return url


def push_to_hub(repo_id: str, directory: str | Path, private: bool = False, token: str | None = None,
                commit_message: str = "Upload SASRecLLM artifacts") -> str:
    """Create ``repo_id`` if needed and upload the artifact folder; returns the commit URL."""
    directory = Path(directory)
    if not (directory / CONFIG_FILE).exists():
        raise FileNotFoundError(f"{directory}: no {CONFIG_FILE}; write the artifacts with save_artifacts first")
    api = HfApi(token=token)
    repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    commit = api.upload_folder(repo_id=repo.repo_id, folder_path=str(directory), commit_message=commit_message,
                               repo_type="model")
    return str(getattr(commit, "commit_url", commit))
