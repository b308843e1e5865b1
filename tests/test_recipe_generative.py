"""recipes/generative.py end to end on the embedded SmolLM2 and ML-100K with a tiny budget; its artifacts reload
through ``Recommender`` to the very top-K lists the run evaluated, and the ``recommend`` CLI works on them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import AutoTokenizer

from llmrec_ft.cli import main as cli_main
from llmrec_ft.data import prepare_dataset
from llmrec_ft.recommender import Recommender

ROOT = Path(__file__).resolve().parents[1]
RECIPE, CONFIG = ROOT / "recipes" / "generative.py", ROOT / "recipes" / "configs" / "generative_ml100k.yaml"
TINY_BUDGET = ["--max_steps", "2", "--max_train_examples", "8", "--per_device_train_batch_size", "4",
               "--eval_users", "3", "--num_beams", "10", "--eval_ks", "5", "10", "--max_history", "3",
               "--eval_batch_size", "3", "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("generative_recipe")
    command = [sys.executable, str(RECIPE), "--config", str(CONFIG), "--output_dir", str(output_dir), *TINY_BUDGET,
               "--push_to_hub", "true", "--hub_model_id", "me/generative-test"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1500,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    return output_dir, result.stdout


def test_recipe_writes_metrics_artifacts_and_summary(run):
    output_dir, stdout = run
    metrics = json.loads((output_dir / "metrics.json").read_text())
    for protocol in ("exclude_history", "include_history"):
        assert {"hr@5", "ndcg@10", "mrr@10"} <= set(metrics["test"][protocol])
        assert metrics["test"][protocol]["num_users"] == 3
    assert metrics["train_examples"] == 8 + metrics["num_items"]  # + one title_to_codes example per item
    assert metrics["semantic_ids"]["levels"][0]["codebook_size"] == 128  # shrunk for 1,682 items
    artifacts = output_dir / "artifacts"
    for name in ("adapter_model.safetensors", "tokenizer.json", "semantic_ids/codes.npy", "catalog.json",
                 "config.yaml", "metrics.json", "README.md"):
        assert (artifacts / name).exists(), name
    assert "Generative recommender" in (artifacts / "README.md").read_text()
    assert not (output_dir / "final").exists()  # artifacts/ is the one copy of the trained parts
    vocabulary_size = len(AutoTokenizer.from_pretrained(artifacts))
    adapter = load_file(artifacts / "adapter_model.safetensors")
    assert all("lora_" in name or name.endswith("trainable_tokens_delta") for name in adapter)
    assert max(t.shape[0] for t in adapter.values()) < vocabulary_size  # no [V, H] matrix: 4.4 MiB, not 223 MiB
    assert (output_dir / "code_usage.png").stat().st_size > 0
    assert "test   exclude" in stdout


def test_reloaded_artifacts_reproduce_the_evaluated_top_k(run):
    output_dir, _ = run
    ds = prepare_dataset()
    raw = ds["items"]["raw_item_id"]
    recommender = Recommender.from_pretrained(output_dir / "artifacts", "cpu")
    histories = [[raw[i - 1] for i in row["history"]] for row in ds["test"].select(range(3))]
    expected = json.loads((output_dir / "test_top_k.json").read_text())
    for protocol, exclude in (("exclude_history", True), ("include_history", False)):
        items, scores = recommender.recommend(histories, k=10, exclude_history=exclude)
        assert items == [[raw[i - 1] for i in row if i > 0] for row in expected[protocol]], protocol
        assert all(s == sorted(s, reverse=True) for s in scores)
    items, _ = recommender.recommend(histories, k=10)
    assert all(not set(row) & set(h) for row, h in zip(items, histories))


def test_recommend_cli(run, tmp_path, capsys):
    output_dir, _ = run
    ds = prepare_dataset()
    raw = ds["items"]["raw_item_id"]
    users = tmp_path / "users.jsonl"
    users.write_text("".join(json.dumps({"user_id": u, "history": [raw[i - 1] for i in row["history"]]}) + "\n"
                             for u, row in enumerate(ds["test"].select(range(2)))))
    out = tmp_path / "recs.jsonl"
    assert cli_main(["recommend", "--model", str(output_dir / "artifacts"), "--input", str(users), "--k", "5",
                     "--out", str(out), "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["user_id"] for r in rows] == [0, 1] and all(len(r["items"]) == 5 for r in rows)
    users.write_text(users.read_text() + json.dumps({"user_id": 9, "history": [raw[0], "no-such-item"]}) + "\n")
    out.unlink()
    assert cli_main(["recommend", "--model", str(output_dir / "artifacts"), "--input", str(users),
                     "--out", str(out), "--device", "cpu"]) == 2
    assert "users.jsonl, row 3, field 'history': unknown item id 'no-such-item' at position 1" in \
        capsys.readouterr().err
    assert not out.exists()  # nothing half-written
    assert cli_main(["recommend", "--model", str(tmp_path / "no-such-folder"), "--input", str(users),
                     "--out", str(out), "--device", "cpu"]) == 2
    assert "error: --model" in capsys.readouterr().err and not out.exists()
