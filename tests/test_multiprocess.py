"""The multi-process path of the SASRecLLM recipe in CI: 2 CPU processes over gloo
(``accelerate_configs/cpu_2proc.yaml``), a few optimizer steps on a tiny model, unchanged recipe and config.

The GPU configs (DDP, DeepSpeed ZeRO-2/3, FSDP) differ from this one only in the accelerate YAML; this test
proves the recipe itself is distribution-safe (data sharding, rank-0-only writes, barriers, checkpoints)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file

from llmrec_ft.collab.sasrec import SASRec, SASRecConfig
from llmrec_ft.data import DataConfig, num_items, prepare_dataset
from llmrec_ft.train.tiny import save_tiny_backbone

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "accelerate_configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_accelerate_configs_parse(name):
    config = load_config_from_file(str(CONFIGS / name))
    assert config.num_processes >= 1 and config.mixed_precision in ("no", "bf16")


def test_two_cpu_processes_run_the_recipe(tmp_path):
    items = num_items(prepare_dataset(DataConfig(dataset="ml-100k", cold_item_threshold=10)))
    sasrec = tmp_path / "sasrec"
    SASRec(SASRecConfig(num_items=items, hidden_size=16, num_blocks=1, max_len=50)).save_pretrained(sasrec)
    backbone = save_tiny_backbone(tmp_path / "tiny-llama", "llama", hidden_size=32, num_layers=2)
    output = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "recipes" / "sasrecllm.py"), "--use_cpu", "true",
               "--config", str(ROOT / "recipes" / "configs" / "sasrecllm_ml100k.yaml"),
               "--output_dir", str(output), "--model_name_or_path", str(backbone), "--sasrec_checkpoint", str(sasrec),
               "--schedule", "hierarchical", "--max_steps", "3", "--projector_from_step", "1", "--collab_from_step", "2",
               "--max_train_samples", "16", "--max_eval_samples", "6", "--ranking_users", "2",
               "--ranking_negatives", "3", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "8",
               "--max_history", "3", "--save_steps", "2", "--disable_tqdm", "true"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"})
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((output / "metrics.json").read_text())
    assert {"auc_warm", "auc_cold"} <= set(metrics["sasrecllm"])
    state = json.loads((output / "checkpoint-2" / "trainer_state.json").read_text())
    # 2 processes x 2 samples per device: every optimizer step consumed a global batch of 4
    assert state["train_batch_size"] * 2 == 4 or state.get("global_step") == 2
    assert (output / "artifacts" / "adapter_model.safetensors").exists()
