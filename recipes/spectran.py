"""Train an ID backbone (SASRec, GRU4Rec, BERT4Rec, HSTU) with LLM item text fused in through an adapter.

    python recipes/spectran.py --config recipes/configs/spectran_ml100k.yaml [--backbone gru4rec --adapter mlp]
    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/spectran.py --config ...

``adapter``: ``none`` (ID-only), ``linear``/``mlp`` (learned projection), ``svd`` (frozen top-k principal
coordinates) or ``spectran`` (spectral-aware transformer adapter, :mod:`llmrec_ft.adapters.spectran`).
``loss``: ``ce`` (full-catalogue cross-entropy) or ``infonce`` (sampled softmax with a temperature, what
SpecTran trains with; :mod:`llmrec_ft.adapters.infonce`).
Item texts (``ds["items"]["text"]``) are encoded once by ``text_encoder`` (the embedded SmolLM2 by default,
any causal LM, or the ``all-minilm-l6-v2`` sentence encoder) and cached on disk, keyed by the name and the texts.

``output_dir`` ends with ``config.json`` + ``model.safetensors`` (the fused model's weights),
``adapter_config.json`` + ``text_embeddings.safetensors`` (what
:func:`llmrec_ft.adapters.fused_model.load_fused_model` needs to rebuild it without the LLM), ``metrics.json``
(valid/test full ranking, overall and warm/cold, and the git commit) and ``spectrum.json`` / ``spectrum.png``
(normalized singular values of the adapted text embeddings: the dimension-collapse check).
"""

from __future__ import annotations

from pathlib import Path

from accelerate import PartialState
from transformers import set_seed
from trl import TrlParser

from llmrec_ft.adapters.fused_model import (FusedModelArgs, build_fused_model, item_spectra, item_text_matrix,
                                            save_fused_model)
from llmrec_ft.collab.bert4rec import MaskedItemCollator, masked_item_windows
from llmrec_ft.collab.trainer import RankingTrainingArguments, final_ranking_metrics, train_id_model
from llmrec_ft.data import DataConfig, num_items, prepare_dataset
from llmrec_ft.eval.report import format_metrics_table
from llmrec_ft.io import write_json
from llmrec_ft.provenance import git_commit


def main(model_args: FusedModelArgs, data_args: DataConfig, training_args: RankingTrainingArguments) -> dict:
    with PartialState().main_process_first():  # several processes: the first writes the cache, once
        ds = prepare_dataset(data_args)
    text = None if model_args.adapter == "none" else item_text_matrix(ds, model_args)
    set_seed(training_args.seed)  # the model is built before Trainer seeds anything
    model = build_fused_model(model_args, num_items(ds), text)
    if model_args.backbone == "bert4rec":
        trainer = train_id_model(model, ds, training_args,
                                 train_dataset=masked_item_windows(ds["train"], model_args.max_len),
                                 data_collator=MaskedItemCollator(model.config.mask_token_id, model_args.mask_prob))
    else:
        trainer = train_id_model(model, ds, training_args)
    metrics = {**final_ranking_metrics(trainer, ds), "spectrum": item_spectra(trainer.model),
               "git_commit": git_commit()}
    if trainer.is_world_process_zero():
        output_dir = Path(training_args.output_dir)
        save_fused_model(trainer.model, model_args, text, metrics["spectrum"], output_dir)
        write_json(output_dir / "metrics.json", metrics)
        print(format_metrics_table(metrics, {"metrics": output_dir / "metrics.json", "model": output_dir,
                                             "spectrum plot": output_dir / "spectrum.png"}))
    return metrics


if __name__ == "__main__":
    main(*TrlParser((FusedModelArgs, DataConfig, RankingTrainingArguments)).parse_args_and_config())
