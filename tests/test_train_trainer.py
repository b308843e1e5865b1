"""TRL SFTTrainer on the hybrid model: answer-only loss, staged freezing, checkpoints that hold every
trained part, for Llama, Qwen2 and Mistral."""

import dataclasses
from pathlib import Path

import pytest
import torch
from trl import SFTConfig

from llmrec_ft.data import DataConfig, build_dataset, num_items
from llmrec_ft.llm.prompts import load_prompt
from llmrec_ft.train.collator import PointwiseCollator
from llmrec_ft.train.freezing import (FreezeStage, StagedFreezing, collaborative_lm_parts, hierarchical_stages)
from llmrec_ft.train.pointwise_data import PointwiseConfig, build_pointwise_samples, encode_pointwise
from llmrec_ft.train.tiny import save_tiny_backbone, tiny_collaborative_lm
from llmrec_ft.train.schedules import run_stage
from llmrec_ft.train.trainer import CHECKPOINT_MODEL_DIR, CollaborativeSFTTrainer

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def ds():
    dataset, _ = build_dataset(DataConfig(dataset="ml-100k-grouplens", data_path=str(FIXTURES / "ml-100k")))
    return dataset


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbones")
    return {arch: save_tiny_backbone(root / arch, arch, hidden_size=32, num_layers=1)
            for arch in ("llama", "qwen2", "mistral")}


def _encoded(ds, tokenizer, collaborative=True):
    samples = build_pointwise_samples(ds, PointwiseConfig(max_history=3))
    return encode_pointwise(samples["train"], tokenizer, load_prompt("yes_no"), ["", *ds["items"]["title"]],
                            collaborative, max_history=3)


def _trainer(model, tokenizer, dataset, output_dir, stages, max_steps, collaborative=True, **overrides):
    settings = dict(output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=4,
                    learning_rate=1e-2, use_cpu=True, bf16=False, gradient_checkpointing=False, report_to=[],
                    remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True}, save_strategy="no",
                    logging_steps=1, disable_tqdm=True, seed=0)
    args = SFTConfig(**{**settings, **overrides})
    return CollaborativeSFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                   data_collator=PointwiseCollator(tokenizer.pad_token_id, collaborative),
                                   callbacks=[StagedFreezing(collaborative_lm_parts(model), stages)])


def _snapshot(model):
    return {part: [p.detach().clone() for p in params] for part, params in collaborative_lm_parts(model).items()}


def _changed(before, model):
    after = collaborative_lm_parts(model)
    return {part: any(not torch.equal(a, b) for a, b in zip(before[part], after[part])) for part in before}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_joint_stage_trains_lora_and_projector_only(ds, backbones, tmp_path, arch):
    model, tokenizer = tiny_collaborative_lm(backbones[arch], num_items(ds))
    base = {n: p.detach().clone() for n, p in model.lm.named_parameters() if "lora_" not in n}
    before = _snapshot(model)
    trainer = _trainer(model, tokenizer, _encoded(ds, tokenizer), tmp_path, [FreezeStage(0, ("lora", "projector"))], 2)
    trainer.train()
    assert _changed(before, model) == {"lora": True, "projector": True, "collab": False}
    assert all(torch.equal(p, base[n]) for n, p in model.lm.named_parameters() if "lora_" not in n)
    assert all(torch.isfinite(torch.tensor(log["loss"])) for log in trainer.state.log_history if "loss" in log)


def test_loss_is_the_answer_token_cross_entropy(ds, backbones):
    model, tokenizer = tiny_collaborative_lm(backbones["llama"], num_items(ds))
    rows = _encoded(ds, tokenizer).select(range(3)).to_list()
    batch = PointwiseCollator(tokenizer.pad_token_id)(rows)
    model.eval()
    with torch.no_grad():
        loss = model(**batch).loss
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    lengths = batch["attention_mask"].sum(1)
    answer = [batch["input_ids"][i, lengths[i] - 1] for i in range(3)]
    expected = torch.stack([torch.nn.functional.cross_entropy(logits[i, lengths[i] - 2], answer[i])
                            for i in range(3)]).mean()
    torch.testing.assert_close(loss, expected)


def test_hierarchical_freezing_unfreezes_in_order(ds, backbones, tmp_path):
    stages = hierarchical_stages(projector_from=2, collab_from=3)
    seen = []
    for max_steps, expected in ((2, {"lora": True, "projector": False, "collab": False}),
                                (3, {"lora": True, "projector": True, "collab": False}),
                                (4, {"lora": True, "projector": True, "collab": True})):
        model, tokenizer = tiny_collaborative_lm(backbones["llama"], num_items(ds))
        before = _snapshot(model)
        trainer = _trainer(model, tokenizer, _encoded(ds, tokenizer), tmp_path / str(max_steps), stages, max_steps)
        trainer.train()
        assert _changed(before, model) == expected, max_steps
        seen.append(sum(p.numel() for group in trainer.optimizer.param_groups for p in group["params"]))
    # The optimizer holds every part that will ever train from the first step on, so unfreezing works.
    assert len(set(seen)) == 1
    total = sum(p.numel() for params in collaborative_lm_parts(model).values() for p in params)
    assert seen[0] == total


def test_staged_freezing_rejects_bad_plans(ds, backbones):
    model, _ = tiny_collaborative_lm(backbones["llama"], num_items(ds))
    parts = collaborative_lm_parts(model)
    with pytest.raises(ValueError, match="unknown"):
        FreezeStage(0, ("lm_head",))
    with pytest.raises(ValueError, match="step 0"):
        StagedFreezing(parts, [FreezeStage(5, ("lora",))])
    with pytest.raises(ValueError, match="projector_from"):
        hierarchical_stages(5, 2)


def test_checkpoint_holds_every_trained_part_and_reloads(ds, backbones, tmp_path):
    model, tokenizer = tiny_collaborative_lm(backbones["llama"], num_items(ds))
    stages = [FreezeStage(0, ("lora", "projector", "collab"))]
    trainer = _trainer(model, tokenizer, _encoded(ds, tokenizer), tmp_path, stages, 2, save_strategy="steps",
                       save_steps=2)
    trainer.train()
    saved = tmp_path / "checkpoint-2" / CHECKPOINT_MODEL_DIR
    for name in ("adapter_model.safetensors", "projector.safetensors", "collab_model/model.safetensors"):
        assert (saved / name).exists(), name
    assert (tmp_path / "checkpoint-2" / "optimizer.pt").exists()
    assert not (tmp_path / "checkpoint-2" / "model.safetensors").exists()  # no dump of the frozen base model
    fresh, _ = tiny_collaborative_lm(backbones["llama"], num_items(ds), seed=1)
    fresh.load_pretrained_weights(saved)
    for part, params in collaborative_lm_parts(model).items():
        for a, b in zip(params, collaborative_lm_parts(fresh)[part]):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=part)


def test_evaluation_reports_the_valid_scorer_auc_and_needs_it(ds, backbones, tmp_path):
    model, tokenizer = tiny_collaborative_lm(backbones["llama"], num_items(ds))
    data = _encoded(ds, tokenizer)
    args = SFTConfig(output_dir=str(tmp_path), max_steps=1, use_cpu=True, bf16=False, report_to=[],
                     eval_strategy="steps", eval_steps=1, save_strategy="no", disable_tqdm=True)
    common = dict(model=model, args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer,
                  data_collator=PointwiseCollator(tokenizer.pad_token_id, True))
    with pytest.raises(ValueError, match="score_valid"):
        CollaborativeSFTTrainer(**common)
    seen = []
    trainer = CollaborativeSFTTrainer(**common, score_valid=lambda live: seen.append(live) or 0.75)
    assert trainer.evaluate()["eval_auc"] == 0.75 and seen == [trainer.model]
    assert trainer.state.log_history[-1]["eval_auc"] == 0.75
    with pytest.raises(ValueError, match="validation rows it was built with"):
        trainer.evaluate(data.select(range(4)))
    loss_metric = dataclasses.replace(args, load_best_model_at_end=True, save_strategy="steps", save_steps=1)
    with pytest.raises(ValueError, match="metric_for_best_model"):
        CollaborativeSFTTrainer(**{**common, "args": loss_metric}, score_valid=lambda live: 0.5)


def test_early_stopping_without_best_model_selection_is_refused_before_training(ds, backbones, tmp_path):
    model, tokenizer = tiny_collaborative_lm(backbones["llama"], num_items(ds))
    args = SFTConfig(output_dir=str(tmp_path), max_steps=1, use_cpu=True, bf16=False, report_to=[])
    with pytest.raises(ValueError, match="early_stopping_patience needs eval_strategy"):
        run_stage("s", model, tokenizer, _encoded(ds, tokenizer), [FreezeStage(0, ("lora",))], args, True,
                  early_stopping_patience=2)
    assert not (tmp_path / "s").exists()
