"""One generative-recommendation run, shared by ``recipes/generative.py`` and ``benchmarks/generative_beauty.py``.

Steps of :func:`run_generative`: prepared data -> (SASRec, when collaborative SIDs or CF tokens need one) ->
item embeddings -> semantic IDs (+ code-usage stats and PNG) -> LoRA model with code tokens -> SFT on every
training prefix (:mod:`~llmrec_ft.generative.examples`) -> constrained beam search on valid/test
(:mod:`~llmrec_ft.generative.evaluate`) -> the trained folder, ready for ``hub.save_artifacts``.

SID inputs (``sid_source``): ``text`` (item text embeddings), ``collaborative`` (SASRec item embeddings) or
``text+collaborative`` (both, each centred and scaled to unit mean norm, then concatenated: the "collaborative
semantic IDs" of LETTER / LC-Rec's CF variants, via ``semantic_ids.concat_embeddings``). Text embeddings come
from ``text_encoder``: ``backbone`` = the recipe's LLM, mean-pooled last hidden state
(``llm.text_embeddings.item_text_embeddings``, cached on disk), or a sentence encoder name handled by
``llm.text_embeddings.embed_item_texts`` (being added by the models work; until it lands, only ``backbone``).

Several processes (``accelerate launch`` / ``torchrun``): SASRec trains data-parallel through its Trainer like
the LLM; what is not training runs once, on the main process, and reaches the others by
``accelerate.utils.broadcast_object_list`` (:func:`on_main_process`): SASRec's test metrics, the item
embeddings + quantiser (the backbone is loaded once, the text-embedding cache written once, and every process
gets the very same codes, which a per-process k-means would not guarantee). Evaluation shards the users
(:func:`~llmrec_ft.generative.evaluate.evaluate_generative`); files are written by the main process only.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from transformers import set_seed
from trl import SFTConfig

from llmrec_ft.collab.sasrec import SASRec
from llmrec_ft.collab.trainer import PretrainedSASRecArgs, evaluate_ranking, load_or_train_sasrec
from llmrec_ft.data import num_items
from llmrec_ft.generative.evaluate import CatalogDecoder, evaluate_generative
from llmrec_ft.generative.examples import ExampleConfig, GenerativeExamples
from llmrec_ft.generative.semantic_ids import SemanticIDs, build_semantic_ids, concat_embeddings, plot_code_usage
from llmrec_ft.generative.tokens import code_tokens
from llmrec_ft.generative.training import (GenerativeModelArgs, build_generative_model, final_dir,
                                           load_generative_model, train_generative)
from llmrec_ft.io import write_json
from llmrec_ft.llm.backbone import load_backbone
from llmrec_ft.llm.text_embeddings import item_text_embeddings

logger = logging.getLogger(__name__)

SID_SOURCES = ("text", "collaborative", "text+collaborative")
CATALOG_FILE, SIDS_DIR = "catalog.json", "semantic_ids"


@dataclass
class SemanticIDArgs:
    sid_source: str = field(default="text", metadata={"help": f"Item embeddings quantised: one of {SID_SOURCES}."})
    text_encoder: str = field(default="backbone", metadata={
        "help": "'backbone' (the LLM, mean-pooled) or a sentence encoder of llm.text_embeddings.embed_item_texts."})
    num_levels: int = field(default=3, metadata={"help": "Quantisation levels L (plus one collision level)."})
    codebook_size: int = field(default=256, metadata={"help": "Codes per level (shrunk for small catalogues)."})
    sid_method: str = field(default="rkmeans", metadata={"help": "rkmeans | rqvae."})
    sid_seed: int = field(default=0, metadata={"help": "Seed of the quantiser."})


@dataclass
class GenerativeEvalArgs:
    num_beams: int = field(default=20, metadata={"help": "Beam width (>= the largest K)."})
    eval_ks: list[int] = field(default_factory=lambda: [5, 10, 20], metadata={"help": "K of HR/NDCG/MRR@K."})
    eval_users: int | None = field(default=None, metadata={"help": "First N users evaluated (None = all)."})
    eval_batch_size: int = field(default=16, metadata={"help": "Users per beam-search batch."})
    eval_valid: bool = field(default=True, metadata={"help": "Also report the validation split."})
    decoding: str = field(default="fast", metadata={"help": "fast (constrained_beam_search) | hf (generate)."})


def on_main_process(compute):
    """``compute()`` run on the main process only, its (picklable) result broadcast to every process."""
    result = [compute() if PartialState().is_main_process else None]
    return broadcast_object_list(result)[0]


def train_or_load_sasrec(ds: datasets.DatasetDict, args: PretrainedSASRecArgs, output_dir: Path, seed: int,
                         use_cpu: bool = False) -> tuple[SASRec, dict]:
    """The checkpoint given, one trained earlier into ``output_dir/sasrec``, or a fresh early-stopped SASRec
    (:func:`~llmrec_ft.collab.trainer.load_or_train_sasrec`). Returns the model and its full-ranking test metrics
    (history excluded)."""
    sasrec, _ = load_or_train_sasrec(ds, args.sasrec_checkpoint, output_dir, seed, args.sasrec_epochs,
                                     args.sasrec_patience, use_cpu)
    return sasrec, on_main_process(lambda: evaluate_ranking(sasrec, ds, "test", ks=(10, 20))["all"])


def item_embeddings(ds: datasets.DatasetDict, args: SemanticIDArgs, model_args: GenerativeModelArgs,
                    sasrec: SASRec | None) -> np.ndarray:
    """``[N, D]`` inputs of the quantiser, row ``i`` = item id ``i + 1`` (see the module docstring)."""
    if args.sid_source not in SID_SOURCES:
        raise ValueError(f"sid_source={args.sid_source!r}; choose one of {SID_SOURCES}")
    blocks = []
    if "text" in args.sid_source.split("+"):
        texts = list(ds["items"]["text"])
        if args.text_encoder == "backbone":
            lm, tokenizer = load_backbone(model_args.model_name_or_path, dtype=model_args.dtype)
            lm.to(PartialState().device)
            blocks.append(item_text_embeddings(lm, tokenizer, texts, model_args.model_name_or_path))
            del lm
        else:
            from llmrec_ft.llm.text_embeddings import embed_item_texts  # the sentence-encoder path

            blocks.append(embed_item_texts(texts, text_encoder=args.text_encoder))
    if "collaborative" in args.sid_source.split("+"):
        if sasrec is None:
            raise ValueError("sid_source with 'collaborative' needs a SASRec")
        blocks.append(sasrec.all_item_embeddings()[1:].detach().cpu())
    return concat_embeddings(*blocks) if len(blocks) > 1 else np.asarray(torch.as_tensor(blocks[0]).float())


def run_generative(ds: datasets.DatasetDict, model_args: GenerativeModelArgs, example_config: ExampleConfig,
                   sid_args: SemanticIDArgs, collab_args: PretrainedSASRecArgs, eval_args: GenerativeEvalArgs,
                   training_args: SFTConfig) -> tuple[dict, Path]:
    """Train and evaluate one configuration; returns ``(metrics, trained folder)``. The folder holds the trained
    parts plus ``semantic_ids/`` and ``catalog.json`` (raw item ids and titles), all a reload needs;
    ``output_dir/<split>_top_k.json`` holds each evaluated user's top-K item ids (both protocols)."""
    output_dir, timings = Path(training_args.output_dir), {}
    metrics: dict = {"num_items": num_items(ds), "num_users": len(ds["test"])}
    sasrec = None
    needs_sasrec = example_config.collaborative_tokens or "collaborative" in sid_args.sid_source
    if needs_sasrec:
        start = time.perf_counter()
        sasrec, metrics["sasrec_test"] = train_or_load_sasrec(ds, collab_args, output_dir, training_args.seed,
                                                              training_args.use_cpu)
        timings["sasrec"] = time.perf_counter() - start
    sids = None
    if example_config.needs_codes:
        start = time.perf_counter()
        sids = on_main_process(lambda: build_semantic_ids(item_embeddings(ds, sid_args, model_args, sasrec),
                                                          sid_args.num_levels, sid_args.codebook_size,
                                                          sid_args.sid_method, sid_args.sid_seed))
        metrics["semantic_ids"] = sids.stats()
        if PartialState().is_main_process:
            plot_code_usage(sids, output_dir / "code_usage.png")
        timings["semantic_ids"] = time.perf_counter() - start

    set_seed(training_args.seed)
    model, tokenizer, code_ids = build_generative_model(
        model_args, sids, sasrec if example_config.collaborative_tokens else None)
    examples = GenerativeExamples(tokenizer, ds["items"]["title"], example_config,
                                  ["".join(t) for t in code_tokens(sids)] if sids else None, code_ids)
    train_dataset = examples.training_dataset(ds)
    metrics["train_examples"] = len(train_dataset)
    timings["train"] = train_generative(model, tokenizer, train_dataset, training_args)
    # Evaluate what is shipped: the saved folder, reloaded (identical outputs to the live model on one process,
    # tests/test_generative_training.py; the live model may be sharded after FSDP / ZeRO-3 training).
    trained = final_dir(output_dir, example_config.collaborative_tokens)
    device = next(model.parameters()).device
    del model
    model, tokenizer, code_ids = load_generative_model(
        trained, model_args, sids, sasrec if example_config.collaborative_tokens else None)
    model.to(device)
    examples = GenerativeExamples(tokenizer, ds["items"]["title"], example_config,
                                  ["".join(t) for t in code_tokens(sids)] if sids else None, code_ids)

    lm = model.lm if example_config.collaborative_tokens else model
    decoder = CatalogDecoder.from_examples(examples, lm.get_input_embeddings().weight.shape[0])
    kwargs = dict(ks=eval_args.eval_ks, num_beams=eval_args.num_beams, max_users=eval_args.eval_users,
                  batch_size=eval_args.eval_batch_size, decoding=eval_args.decoding)
    for split in (("valid", "test") if eval_args.eval_valid else ("test",)):
        metrics[split] = evaluate_generative(model, examples, decoder, ds, split, **kwargs)
        timings[f"eval_{split}"] = metrics[split].pop("eval_seconds")
        top_k = metrics[split].pop("top_k")
        if PartialState().is_main_process:  # per-user lists, e.g. to check that a reload gives the same ones
            write_json(output_dir / f"{split}_top_k.json", top_k)
    metrics["timings_s"] = timings

    if PartialState().is_main_process:
        if sids is not None:
            sids.save(trained / SIDS_DIR)
        write_json(trained / CATALOG_FILE, {"raw_item_ids": list(ds["items"]["raw_item_id"]),
                                            "titles": list(ds["items"]["title"])})
    return metrics, trained


def load_catalog(directory: str | Path) -> dict:
    """``{"raw_item_ids": [...], "titles": [...]}`` saved by :func:`run_generative` (row ``i`` = item ``i + 1``)."""
    return json.loads((Path(directory) / CATALOG_FILE).read_text())


def load_semantic_ids(directory: str | Path) -> SemanticIDs | None:
    path = Path(directory) / SIDS_DIR
    return SemanticIDs.load(path) if path.exists() else None
