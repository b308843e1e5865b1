"""The multi-process path of the SASRecLLM recipe in CI: 2 CPU processes over gloo, a few optimizer steps
on a tiny model, unchanged recipe and config.

``accelerate launch`` starts several *CPU* processes only through ``mpirun`` (its multi-CPU launcher); without
MPI it silently runs one. So the test starts the processes with ``torchrun`` (which ``accelerate launch``
itself wraps for GPUs) and ``--use_cpu``: Accelerate, inside Trainer, then sees a 2-process gloo world. The
GPU configs in ``accelerate_configs/`` (DDP, DeepSpeed ZeRO-2/3, FSDP) only change how the same recipe is
launched and sharded; this test proves the recipe is distribution-safe (data sharding, rank-0-only writes,
barriers, checkpoints)."""

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


def test_two_cpu_processes_run_the_recipe_padding_free(tmp_path):
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
               "--max_history", "3", "--save_steps", "2", "--disable_tqdm", "true",
               "--padding_free", "true", "--attn_implementation", "llmrec_varlen"]  # the GPU levers, CPU kernels
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"})
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((output / "metrics.json").read_text())
    assert {"auc_warm", "auc_cold"} <= set(metrics["sasrecllm"])
    state = json.loads((output / "hybrid_stage" / "checkpoint-3" / "trainer_state.json").read_text())
    # 16 training samples, 2 per process: 2 processes make an epoch 4 steps long (one process: 8)
    assert metrics["samples"]["train"] == 16 and state["epoch"] == pytest.approx(3 / 4)
    assert (output / "artifacts" / "adapter_model.safetensors").exists()
