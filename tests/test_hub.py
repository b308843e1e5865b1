"""Artifacts: the saved folder reloads to the same scores; push_to_hub drives huggingface_hub (mocked)."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from llmrec_ft import hub
from llmrec_ft.data import DataConfig, build_dataset, num_items
from llmrec_ft.llm.prompts import load_prompt
from llmrec_ft.train.pointwise_data import PointwiseConfig, answer_token_ids, build_pointwise_samples, encode_pointwise
from llmrec_ft.train.scoring import yes_probabilities
from llmrec_ft.train.tiny import save_tiny_backbone, tiny_collaborative_lm

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module", params=["sasrec", "hstu"])  # either ID model serves as the collaborative one
def saved(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("hub")
    ds, _ = build_dataset(DataConfig(dataset="ml-100k-grouplens", data_path=str(FIXTURES / "ml-100k")))
    backbone = save_tiny_backbone(root / "tiny-qwen2", "qwen2", hidden_size=32, num_layers=1)
    model, tokenizer = tiny_collaborative_lm(backbone, num_items(ds), collab_model=request.param)
    with torch.no_grad():  # make every part matter: non-zero LoRA B, distinct projector and SASRec
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    samples = build_pointwise_samples(ds, PointwiseConfig(max_history=3))["test"]
    encoded = encode_pointwise(samples, tokenizer, load_prompt("yes_no"), ["", *ds["items"]["title"]], True, 3)
    config = {"model_name_or_path": str(backbone), "dtype": "float32", "schedule": "dual_stage", "dataset": "ml-100k"}
    metrics = {"sasrecllm": {"auc_warm": 0.61, "auc_cold": 0.58}}
    model.save_pretrained(root / "model")
    artifacts = hub.save_artifacts(root / "artifacts", root / "model", tokenizer, config, metrics)
    yes, no = answer_token_ids(tokenizer)
    scores = yes_probabilities(model, encoded, tokenizer.pad_token_id, yes, no, True, batch_size=4)
    return artifacts, encoded, scores, model


def test_layout(saved):
    artifacts = saved[0]
    for name in ("adapter_config.json", "adapter_model.safetensors", "projector.safetensors", "collaborative_lm.json",
                 "collab_model/config.json", "collab_model/model.safetensors", "tokenizer.json", "config.yaml",
                 "metrics.json", "README.md"):
        assert (artifacts / name).exists(), name
    assert yaml.safe_load((artifacts / "config.yaml").read_text())["schedule"] == "dual_stage"
    card = (artifacts / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: peft" in card and "| sasrecllm/auc_cold | 0.5800 |" in card
    assert "<|item_cf|>" in (artifacts / "tokenizer.json").read_text()


def test_reloaded_artifacts_reproduce_the_scores(saved):
    artifacts, encoded, scores, original = saved
    model, tokenizer, config = hub.load_artifacts(artifacts)
    assert config["schedule"] == "dual_stage" and type(model.collab_model) is type(original.collab_model)
    yes, no = answer_token_ids(tokenizer)
    reloaded = yes_probabilities(model, encoded, tokenizer.pad_token_id, yes, no, True, batch_size=4)
    torch.testing.assert_close(reloaded, scores, rtol=0, atol=1e-6)
    assert scores.std() > 0


def test_push_to_hub_uploads_the_folder(saved, monkeypatch):
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, private, exist_ok, repo_type):
            calls.append(("create_repo", repo_id, private, exist_ok, repo_type))
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, commit_message, repo_type):
            calls.append(("upload_folder", repo_id, folder_path, repo_type))
            return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    url = hub.push_to_hub("me/sasrecllm-ml100k", saved[0], private=True, token="hf_x")
    assert url.endswith("/commit/abc")
    assert calls == [("init", "hf_x"), ("create_repo", "me/sasrecllm-ml100k", True, True, "model"),
                     ("upload_folder", "me/sasrecllm-ml100k", str(saved[0]), "model")]
    with pytest.raises(FileNotFoundError, match="save_artifacts"):
        hub.push_to_hub("me/x", saved[0].parent)

    # what the recipes call: Trainer's hub arguments; offline keeps the folder and pushes nothing
    args = SimpleNamespace(hub_model_id="me/sasrecllm-ml100k", hub_private_repo=True, hub_token="hf_x")
    calls.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.push_artifacts(saved[0], args) is None and calls == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert hub.push_artifacts(saved[0], args).endswith("/commit/abc") and calls[0] == ("init", "hf_x")
    with pytest.raises(ValueError, match="hub_model_id"):
        hub.push_artifacts(saved[0], SimpleNamespace(hub_model_id=None))
