"""End to end: ``recipes/sasrec.py`` on the embedded ML-100K with a tiny budget, plain and through Accelerate."""

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import LlamaConfig, LlamaModel

from llmrec_ft.collab import HSTU, BERT4Rec, BERT4RecConfig, SASRec, load_id_model
from llmrec_ft.collab.trainer import evaluate_ranking, load_or_train_sasrec
from llmrec_ft.data import DataConfig, prepare_dataset
from llmrec_ft.recommender import Recommender

ROOT = Path(__file__).resolve().parents[1]
RECIPE = runpy.run_path(str(ROOT / "recipes" / "sasrec.py"))  # not "__main__": defines, runs nothing
TINY = ["--config", "recipes/configs/sasrec_ml100k.yaml", "--hidden_size", "16", "--intermediate_size", "32",
        "--max_len", "20", "--num_train_epochs", "1", "--per_device_train_batch_size", "256", "--learning_rate", "0.01",
        "--disable_tqdm", "true", "--use_cpu", "true"]


def run(command: list[str], output_dir: Path, *extra: str) -> tuple[dict, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run([*command, *TINY, "--output_dir", str(output_dir), *extra], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((output_dir / "metrics.json").read_text()), result.stdout


def assert_summary_printed(stdout: str, metrics: dict, output_dir: Path) -> None:
    """The end-of-run table: one row per split/group with the numbers of metrics.json, then the paths."""
    row = next(line.split() for line in stdout.splitlines() if line.startswith("test/all "))
    header = next(line.split() for line in stdout.splitlines() if "ndcg@10" in line.split())
    assert float(row[1 + header.index("ndcg@10")]) == pytest.approx(metrics["test"]["all"]["ndcg@10"], abs=5e-5)
    assert f"metrics: {output_dir / 'metrics.json'}" in stdout


def test_recipe_trains_saves_and_reports(tmp_path):
    metrics, stdout = run([sys.executable, "recipes/sasrec.py"], tmp_path, "--report_to", "tensorboard",
                          "--logging_steps", "5")
    assert_summary_printed(stdout, metrics, tmp_path)
    assert list(tmp_path.rglob("events.out.tfevents.*")), "report_to tensorboard wrote no event file"
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "config.json").exists()
    for split in ("valid", "test"):
        assert metrics[split]["all"]["num_users"] == 943
        assert set(metrics[split]) == {"all", "warm", "cold"}
    # one epoch (~20 steps) already beats chance (10 hits in ~1600 unseen items: 0.006) many times over
    assert metrics["test"]["all"]["hr@10"] > 0.05
    model = SASRec.from_pretrained(tmp_path)
    assert model.config.hidden_size == 16 and model.config.num_items == 1682
    reloaded = evaluate_ranking(model, prepare_dataset(DataConfig(dataset="ml-100k")), "test", ks=[10, 20])
    assert reloaded["all"]["ndcg@10"] == pytest.approx(metrics["test"]["all"]["ndcg@10"], abs=1e-6)


def test_recipe_runs_under_accelerate_launch(tmp_path):
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/cpu.yaml",
              "recipes/sasrec.py"]
    metrics, stdout = run(launch, tmp_path)
    assert metrics["test"]["all"]["ndcg@10"] > 0
    assert_summary_printed(stdout, metrics, tmp_path)


def test_hstu_baseline_trains_and_serves_wherever_sasrec_does(tmp_path):
    """``--model hstu``: the HSTU baseline; its folder loads as an LLM recipe's collaborative model and in the
    Recommender, exactly like a SASRec's."""
    metrics, stdout = run([sys.executable, "recipes/sasrec.py"], tmp_path, "--model", "hstu")
    assert_summary_printed(stdout, metrics, tmp_path)
    assert metrics["test"]["all"]["hr@10"] > 0.02  # chance is ~0.006
    model = load_id_model(tmp_path)
    assert isinstance(model, HSTU) and model.config.hidden_size == 16
    ds = prepare_dataset(DataConfig(dataset="ml-100k"))
    collaborative, path = load_or_train_sasrec(ds, tmp_path, tmp_path / "unused", seed=0)
    assert isinstance(collaborative, HSTU) and path == tmp_path
    reloaded = evaluate_ranking(collaborative, ds, "test", ks=[10])
    assert reloaded["all"]["ndcg@10"] == pytest.approx(metrics["test"]["all"]["ndcg@10"], abs=1e-6)
    recommender = Recommender.from_pretrained(tmp_path, device="cpu")
    items, _ = recommender.recommend([["1", "2", "3"]], k=5)
    assert recommender.kind == "hstu" and len(items[0]) == 5 and not {"1", "2", "3"} & set(items[0])


def test_load_id_model_refuses_other_models(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_id_model(tmp_path)
    LlamaModel(LlamaConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                           num_key_value_heads=2, vocab_size=32)).save_pretrained(tmp_path)
    with pytest.raises(TypeError, match="model_type 'llama'"):
        load_id_model(tmp_path)
    BERT4Rec(BERT4RecConfig(num_items=5, hidden_size=8)).save_pretrained(tmp_path / "bert4rec")
    with pytest.raises(TypeError, match="llmrec_bert4rec"):
        load_id_model(tmp_path / "bert4rec")
    with pytest.raises(ValueError, match="loss_type=ce only"):
        RECIPE["build_model"](RECIPE["SASRecArgs"](model="hstu", loss_type="bce"), 10)
