"""Generative recommendation: an LLM fine-tuned (LoRA + code tokens) to write the next item's semantic ID or title.

    python recipes/generative.py --config recipes/configs/generative_ml100k.yaml
    accelerate launch recipes/generative.py --config recipes/configs/generative_beauty_gpu.yaml --task next_title

What one run does (``llmrec_ft/generative/pipeline.py``):

1. prepared data (leave-one-out; ``dataset: sequences`` reads the Beauty/Yelp benchmark files);
2. SASRec, when collaborative SIDs (``sid_source: text+collaborative``) or ``collaborative_tokens`` need it;
3. semantic IDs by residual k-means (or RQ-VAE) of the item embeddings; stats and ``code_usage.png``;
4. backbone + code tokens + LoRA (code-token rows trainable) [+ projector for ``<|user_cf|>``/``<|item_cf|>``];
5. TRL ``SFTTrainer``, completion-only loss, on every prefix of the training sequences (+ alignment tasks);
6. catalogue-constrained beam search -> HR/NDCG/MRR@5/10/20 on valid and test, history excluded and not;
7. ``output_dir/artifacts`` (adapter: LoRA + code-token rows; tokenizer with code tokens, ``semantic_ids/``,
   ``catalog.json``, ``config.yaml``, ``metrics.json``, model card), the run's one copy of the trained parts
   (the ``output_dir/final`` folder training saved is removed once they are written), and
   ``output_dir/metrics.json`` (with the git commit);
   ``--push_to_hub --hub_model_id you/name`` uploads the artifacts. Reload with
   ``llmrec_ft.recommender.Recommender.from_pretrained(output_dir/artifacts)``.

Several processes (DDP; tests/test_multiprocess_generative.py): training batches are sharded by Accelerate,
evaluation users by ``evaluate_generative``; data preparation, SASRec's evaluation and the semantic IDs run once
on the main process, which alone writes files. Re-evaluate saved artifacts on any number of processes with
``torchrun --nproc_per_node N -m llmrec_ft.cli evaluate --model output_dir/artifacts`` (identical metrics).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from accelerate import PartialState
from trl import SFTConfig, TrlParser

from llmrec_ft import hub
from llmrec_ft.collab.trainer import PretrainedSASRecArgs
from llmrec_ft.data import DataConfig, prepare_dataset
from llmrec_ft.generative.examples import ExampleConfig
from llmrec_ft.generative.pipeline import GenerativeEvalArgs, SemanticIDArgs, run_generative
from llmrec_ft.generative.training import FINAL_DIR, GenerativeModelArgs
from llmrec_ft.io import write_json
from llmrec_ft.provenance import git_commit

logger = logging.getLogger(__name__)


def summary(metrics: dict) -> str:
    lines = [f"{'split':<6} {'history':<9} {'HR@10':>7} {'NDCG@10':>8} {'MRR@10':>7}"]
    for split in ("valid", "test"):
        for protocol in ("exclude_history", "include_history"):
            if split in metrics:
                m = metrics[split][protocol]
                lines.append(f"{split:<6} {protocol.split('_')[0]:<9} {m['hr@10']:7.4f} {m['ndcg@10']:8.4f} "
                             f"{m['mrr@10']:7.4f}")
    if "sasrec_test" in metrics:
        lines.append(f"SASRec test (history excluded): HR@10 {metrics['sasrec_test']['hr@10']:.4f} "
                     f"NDCG@10 {metrics['sasrec_test']['ndcg@10']:.4f}")
    lines.append("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in metrics["timings_s"].items()))
    return "\n".join(lines)


def main(model_args: GenerativeModelArgs, example_config: ExampleConfig, data_args: DataConfig,
         sid_args: SemanticIDArgs, collab_args: PretrainedSASRecArgs, eval_args: GenerativeEvalArgs,
         training_args: SFTConfig) -> dict:
    push, training_args.push_to_hub = training_args.push_to_hub, False  # pushed once, at the end
    output_dir = Path(training_args.output_dir)
    with PartialState().main_process_first():  # the first preparation writes the cache, once
        ds = prepare_dataset(data_args)
    metrics, trained = run_generative(ds, model_args, example_config, sid_args, collab_args, eval_args, training_args)
    metrics["git_commit"] = git_commit()
    if PartialState().is_main_process:
        config = {"recipe": "generative", **dataclasses.asdict(model_args), **dataclasses.asdict(example_config),
                  **dataclasses.asdict(data_args), **dataclasses.asdict(sid_args), **dataclasses.asdict(collab_args),
                  **dataclasses.asdict(eval_args), "training": training_args.to_dict()}
        if example_config.collaborative_tokens:  # the SASRec the projector was trained with travels in collab_model/
            config["sasrec_checkpoint"] = collab_args.sasrec_checkpoint or str(output_dir / "sasrec")
        tokenizer = _tokenizer_of(trained)
        artifacts = hub.save_artifacts(output_dir / "artifacts", trained, tokenizer, config, metrics)
        shutil.rmtree(output_dir / FINAL_DIR)  # all of it is in artifacts/: no second copy of the weights
        write_json(output_dir / "metrics.json", metrics)
        logger.warning("metrics -> %s, artifacts -> %s", output_dir / "metrics.json", artifacts)
        print(summary(metrics))
        if push:
            hub.push_artifacts(artifacts, training_args)
    return metrics


def _tokenizer_of(trained: Path):
    """The tokenizer Trainer saved next to the adapter (with the code tokens and placeholders)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(trained if (trained / "tokenizer_config.json").exists() else trained.parent)


if __name__ == "__main__":
    parser = TrlParser((GenerativeModelArgs, ExampleConfig, DataConfig, SemanticIDArgs, PretrainedSASRecArgs,
                        GenerativeEvalArgs, SFTConfig))
    main(*parser.parse_args_and_config())
