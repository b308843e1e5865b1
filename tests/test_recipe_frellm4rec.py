"""End to end on the real embedded SmolLM2-135M (frozen, 30 layers) and the 6-user ML-100K fixture."""

import json
import runpy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainingArguments
from trl import TrlParser

from llmrec_ft.collab.trainer import evaluate_ranking
from llmrec_ft.data import DataConfig, prepare_dataset
from llmrec_ft.filters.frellm4rec import FreLLM4Rec, FreLLM4RecConfig
from llmrec_ft.filters.tfm import temporal_frequency_modulation
from llmrec_ft.llm.backbone import load_backbone

ROOT = Path(__file__).resolve().parents[1]
RECIPE = runpy.run_path(str(ROOT / "recipes" / "frellm4rec.py"))
DATA = ["--dataset", "ml-100k-grouplens", "--data_path", str(ROOT / "tests" / "fixtures" / "ml-100k")]
TINY = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--max_len", "5", "--fusion_size", "64",
        "--sasrec_epochs", "1", "--text_batch_size", "8", "--logging_steps", "1", "--disable_tqdm", "true",
        "--num_negatives", "5"]  # the fixture has 8 items


def run(*argv):
    parser = TrlParser((RECIPE["FreLLM4RecArgs"], DataConfig, TrainingArguments))
    args = parser.parse_args_and_config(["--config", str(ROOT / "recipes/configs/frellm4rec_ml100k.yaml"),
                                         *DATA, *TINY, *argv])
    return RECIPE["main"](*args), args


def test_recipe_trains_ranks_diagnoses_and_saves(tmp_path, capsys):
    metrics, (args, data_args, _) = run("--output_dir", str(tmp_path / "full"), "--energy_users", "6",
                                        "--eval_splits", "valid", "test")
    summary = capsys.readouterr().out.splitlines()  # the end-of-run table: metrics.json's numbers, then paths
    header = next(line.split() for line in summary if "ndcg@10" in line.split())
    row = next(line.split() for line in summary if line.startswith("test/all "))
    assert row[1 + header.index("ndcg@10")] == f"{metrics['test']['all']['ndcg@10']:.4f}"
    assert f"metrics: {tmp_path / 'full' / 'metrics.json'}" in summary
    for split in ("valid", "test"):
        assert metrics[split]["all"]["num_users"] == 6 and 0 <= metrics[split]["all"]["ndcg@10"] <= 1
    assert json.loads((tmp_path / "full" / "metrics.json").read_text())["test"] == metrics["test"]

    energy = json.loads((tmp_path / "full" / "energy.json").read_text())["low_frequency_share"]
    assert set(energy) == {"frozen LM, no TFM", "frozen LM + TFM", "SASRec"}
    assert len(energy["frozen LM + TFM"]) == 31 and len(energy["SASRec"]) == 3  # inputs + each layer
    assert all(0 <= share <= 1 for curve in energy.values() for share in curve)
    assert (tmp_path / "full" / "energy.png").read_bytes()[:4] == b"\x89PNG"

    # The saved trainable part + the backbone's name rebuild the model and its test metrics exactly.
    saved = load_file(tmp_path / "full" / "model" / "trainable.safetensors")
    assert {name.split(".")[0] for name in saved} == {"item_features", "fusion", "output_projection"}
    config = json.loads((tmp_path / "full" / "model" / "frellm4rec.json").read_text())
    backbone, _ = load_backbone(config["backbone"])
    rows = len(saved["item_features"])
    model_config = FreLLM4RecConfig(**{key: config[key] for key in FreLLM4RecConfig.__dataclass_fields__})
    model_config.glpf = False  # the saved item_features are already filtered
    rebuilt = FreLLM4Rec(backbone, torch.zeros(rows, 64), torch.zeros(rows, 576), model_config)
    rebuilt.load_state_dict(saved, strict=False)
    assert evaluate_ranking(rebuilt, prepare_dataset(data_args), "test", seed=0) == metrics["test"]

    # Ablation run reusing the SASRec trained above, item texts from the sentence encoder (384-d, not the
    # LM's 576-d); no diagnostic requested, none written.
    ablation, _ = run("--output_dir", str(tmp_path / "plain"), "--sasrec_checkpoint", str(tmp_path / "full" / "sasrec"),
                      "--glpf", "false", "--tfm", "false", "--energy_users", "0", "--text_encoder", "all-minilm-l6-v2")
    assert "test" in ablation and "valid" not in ablation
    # the reused SASRec is reported again, under both protocols (the sampled one on FreLLM4Rec's negatives)
    assert ablation["sasrec_test"] == json.loads((tmp_path / "full" / "sasrec" / "metrics.json").read_text())["test"]
    assert ablation["sasrec_test_sampled"]["all"]["num_users"] == 6
    assert not (tmp_path / "plain" / "energy.png").exists()
    assert load_file(tmp_path / "plain" / "model" / "trainable.safetensors")["fusion.text_norm.weight"].shape == (384,)


def test_tfm_hooks_leave_smollm2_bit_identical():
    model, _ = load_backbone("smollm2-135m-instruct")
    decoder = model.get_decoder()
    embeds, mask = torch.randn(2, 6, model.config.hidden_size) * 0.1, torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6])
    with torch.no_grad():
        before = decoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        with temporal_frequency_modulation(model, mask, cutoff=0.1, order=2):
            during = decoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        after = decoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    assert torch.equal(before, after) and not torch.allclose(before, during)


def test_recipe_authors_protocol_writes_both_metrics(tmp_path):
    """protocol authors on the real SmolLM2: per-position training, both metrics in metrics.json, last-token text."""
    metrics, _ = run("--output_dir", str(tmp_path / "authors"), "--protocol", "authors", "--tfm_leak", "false",
                     "--energy_users", "0")
    saved = json.loads((tmp_path / "authors" / "metrics.json").read_text())
    assert saved["test"] == metrics["test"] and saved["test_sampled"] == metrics["test_sampled"]
    assert metrics["config"]["protocol"] == "authors" and metrics["config"]["tfm_leak"] is False
    for report in (metrics["test"], metrics["test_sampled"]):
        assert report["all"]["num_users"] == 6 and 0 <= report["all"]["ndcg@10"] <= 1
    # 6 candidates vs the whole catalogue: the authors' metric can only be the easier one.
    assert metrics["test_sampled"]["all"]["hr@20"] >= metrics["test"]["all"]["hr@20"]
    weights = load_file(tmp_path / "authors" / "model" / "trainable.safetensors")
    assert {name.split(".")[0] for name in weights} == {"id_features", "text_features", "fusion", "final_norm"}
    with pytest.raises(ValueError, match="energy_users"):
        run("--output_dir", str(tmp_path / "bad"), "--protocol", "authors", "--energy_users", "6")
    with pytest.raises(ValueError, match="num_negatives=8"):
        run("--output_dir", str(tmp_path / "bad"), "--num_negatives", "8")
