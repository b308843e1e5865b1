"""End to end: ``recipes/spectran.py`` on the embedded ML-100K, one epoch, a tiny random Llama as text encoder."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import TrlParser

from llmrec_ft.adapters.fused_model import load_fused_model
from llmrec_ft.assets import cache_dir
from llmrec_ft.collab.trainer import RankingTrainingArguments, evaluate_ranking
from llmrec_ft.data import DataConfig, prepare_dataset
from llmrec_ft.provenance import git_commit

ROOT = Path(__file__).resolve().parents[1]


def load_recipe():
    spec = importlib.util.spec_from_file_location("spectran_recipe", ROOT / "recipes" / "spectran.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ds():
    return prepare_dataset(DataConfig(dataset="ml-100k"))


@pytest.fixture
def tiny_llm(tmp_path, monkeypatch, ds):
    """A random 2-layer Llama with a word-level tokenizer over the item texts, saved like a Hub checkpoint.

    The text-embedding cache goes to a temporary folder; prepared data and wheels are shared with the real cache.
    """
    real = cache_dir()
    monkeypatch.setenv("LLMREC_FT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    for name in ("datasets", "raw", "wheels"):
        if (real / name).exists():
            (tmp_path / "cache" / name).symlink_to(real / name)
    words = sorted({word for text in ds["items"]["text"] for word in pre_tokenizers.Whitespace().pre_tokenize_str(text)
                    for word in [word[0]]})
    vocab = {"[UNK]": 0, "</s>": 1, **{word: i + 2 for i, word in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="</s>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=len(vocab),
                                         max_position_embeddings=128))
    path = tmp_path / "tiny-llama"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def run_recipe(recipe, llm: Path, output_dir: Path, *overrides: str) -> dict:
    cli = ["--config", str(ROOT / "recipes/configs/spectran_ml100k.yaml"), "--text_encoder", str(llm),
           "--hidden_size", "16", "--intermediate_size", "32", "--gru_hidden_size", "16", "--max_len", "20",
           "--mlp_hidden_size", "32", "--spectran_model_dim", "16", "--num_train_epochs", "1",
           "--per_device_train_batch_size", "256", "--learning_rate", "0.005", "--disable_tqdm", "true", "--use_cpu", "true",
           "--report_to", "none", "--output_dir", str(output_dir), *overrides]
    args = TrlParser((recipe.FusedModelArgs, DataConfig, RankingTrainingArguments)).parse_args_and_config(cli)
    return recipe.main(*args)


def test_spectran_recipe_trains_saves_reloads_and_plots(tmp_path, tiny_llm, ds, capsys):
    recipe = load_recipe()
    out = tmp_path / "run"
    metrics = run_recipe(recipe, tiny_llm, out, "--backbone", "sasrec", "--adapter", "spectran")
    summary = capsys.readouterr().out.splitlines()  # the end-of-run table: metrics.json's numbers, then paths
    header = next(line.split() for line in summary if "ndcg@10" in line.split())
    row = next(line.split() for line in summary if line.startswith("test/all "))
    assert row[1 + header.index("ndcg@10")] == f"{metrics['test']['all']['ndcg@10']:.4f}"
    assert f"spectrum plot: {out / 'spectrum.png'}" in summary
    assert metrics["git_commit"] == git_commit() and f"git_commit: {git_commit()}" in summary
    for name in ("config.json", "model.safetensors", "adapter_config.json", "text_embeddings.safetensors",
                 "metrics.json", "spectrum.json", "spectrum.png"):
        assert (out / name).exists(), name
    assert metrics["test"]["all"]["num_users"] == 943 and set(metrics["test"]) == {"all", "warm", "cold"}
    assert metrics["test"]["all"]["hr@10"] > 0.02  # one epoch beats chance (~10 / 1600) already
    spectrum = json.loads((out / "spectrum.json").read_text())
    assert len(spectrum["adapted"]["normalized_singular_values"]) == 16
    assert 1.0 <= spectrum["adapted"]["effective_rank"] <= 16.0
    assert (out / "spectrum.png").read_bytes()[:4] == b"\x89PNG"
    assert list((tmp_path / "cache" / "text_embeddings").glob("*.safetensors"))  # encoded once, cached

    model = load_fused_model(out)
    assert type(model.item_embeddings.adapter).__name__ == "SpecTranAdapter"
    reloaded = evaluate_ranking(model, ds, "test", ks=[10, 20])
    assert reloaded["all"]["ndcg@10"] == pytest.approx(metrics["test"]["all"]["ndcg@10"], abs=1e-6)


@pytest.mark.parametrize("backbone,adapter,loss", [("gru4rec", "mlp", "ce"), ("bert4rec", "svd", "ce"),
                                                   ("sasrec", "none", "ce"), ("hstu", "spectran", "infonce")])
def test_every_backbone_and_baseline_runs_through_the_same_harness(tmp_path, tiny_llm, backbone, adapter, loss):
    recipe = load_recipe()
    metrics = run_recipe(recipe, tiny_llm, tmp_path / "run", "--backbone", backbone, "--adapter", adapter,
                         "--num_heads", "2", "--loss", loss, "--infonce_negatives", "32")
    assert metrics["valid"]["all"]["ndcg@10"] > 0
    assert ("adapted" in metrics["spectrum"]) == (adapter != "none")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model_type"] == f"llmrec_{backbone}"
    assert config.get("train_loss", "ce") == loss


def test_bad_arguments_are_named(tmp_path, tiny_llm):
    recipe = load_recipe()
    with pytest.raises(ValueError, match="backbone='caser'"):
        run_recipe(recipe, tiny_llm, tmp_path / "run", "--backbone", "caser")
    with pytest.raises(ValueError, match="loss='bpr'"):
        run_recipe(recipe, tiny_llm, tmp_path / "run", "--loss", "bpr")
    with pytest.raises(ValueError, match="unknown adapter 'pca'"):
        run_recipe(recipe, tiny_llm, tmp_path / "run", "--adapter", "pca")
