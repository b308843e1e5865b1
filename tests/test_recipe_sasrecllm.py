"""recipes/sasrecllm.py end to end: the embedded SmolLM2 through ``accelerate launch``, every schedule on a
tiny model, and a run killed mid-training that resumes to the same final metrics."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llmrec_ft.collab.sasrec import SASRec, SASRecConfig
from llmrec_ft.data import DataConfig, num_items, prepare_dataset
from llmrec_ft.provenance import git_commit
from llmrec_ft.train.tiny import save_tiny_backbone

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "sasrecllm.py"
CONFIG = ROOT / "recipes" / "configs" / "sasrecllm_ml100k.yaml"
TINY_BUDGET = ["--max_train_samples", "8", "--max_eval_samples", "6", "--ranking_users", "2",
               "--ranking_negatives", "3", "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "8",
               "--max_history", "3", "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sasrecllm")
    items = num_items(prepare_dataset(DataConfig(dataset="ml-100k", cold_item_threshold=10)))
    sasrecs = []
    for seed in (0, 1):  # two "different SASRec checkpoints" for plug-and-play
        path = root / f"sasrec{seed}"
        SASRec(SASRecConfig(num_items=items, hidden_size=16, num_blocks=1, max_len=50, seed=seed)).save_pretrained(path)
        sasrecs.append(path)
    return {"llama": save_tiny_backbone(root / "tiny-llama", "llama", hidden_size=32, num_layers=2), "sasrec": sasrecs}


def _command(output_dir, *extra):
    return [sys.executable, str(RECIPE), "--config", str(CONFIG), "--output_dir", str(output_dir), *TINY_BUDGET,
            *map(str, extra)]


def _run(command, timeout=900):
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_embedded_smollm2_through_accelerate_launch(assets, tmp_path):
    """The documented command on the real embedded model, with the smallest budget that touches every stage."""
    command = _command(tmp_path, "--sasrec_checkpoint", assets["sasrec"][0], "--max_steps", "1",
                       "--text_stage_max_steps", "1", "--push_to_hub", "true", "--hub_model_id", "me/sasrecllm-test")
    command[1:1] = ["-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu"]
    stdout = _run(command).stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for model in ("text_only_lora", "sasrecllm"):
        assert {"auc_warm", "auc_cold", "hr@10", "ndcg@10"} <= set(metrics[model]), model
        row = [line for line in stdout.splitlines() if line.startswith(f"{model} ")]  # in the summary's tables
        assert f"{metrics[model]['ndcg@10']:.4f}" in " ".join(row), row
    assert max(len(line) for line in stdout.splitlines() if line.startswith("sasrecllm")) <= 100
    assert f"metrics: {tmp_path / 'metrics.json'}" in stdout and f"artifacts: {tmp_path / 'artifacts'}" in stdout
    assert {"next_item", "classifier"} <= set(metrics["sasrec"])
    assert metrics["git_commit"] == git_commit() and f"git_commit: {git_commit()}" in stdout
    assert set(metrics["timings_s"]) == {"sasrec_pretrain", "text_stage", "hybrid_stage"}
    artifacts = tmp_path / "artifacts"  # offline push: the Hub layout stays local
    for name in ("adapter_model.safetensors", "projector.safetensors", "collab_model/config.json", "config.yaml",
                 "README.md", "tokenizer.json"):
        assert (artifacts / name).exists(), name


def test_a_bad_backbone_option_fails_before_sasrec_pretraining(tmp_path):
    result = subprocess.run(_command(tmp_path, "--dtype", "float8"), cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0 and "dtype='float8' is not supported; use one of" in result.stderr
    assert not list(tmp_path.iterdir())  # nothing prepared, pre-trained or written


EVALUATE = ["--eval_strategy", "steps", "--eval_steps", "1", "--save_steps", "1"]


@pytest.mark.parametrize("flags, message", [
    ([*EVALUATE, "--load_best_model_at_end", "true"], "metric_for_best_model='loss'"),
    (["--early_stopping_patience", "2"], "early_stopping_patience needs eval_strategy"),
    ([*EVALUATE, "--metric_for_best_model", "auc", "--max_valid_samples", "1"], "hold one label only")])
def test_bad_model_selection_settings_fail_before_sasrec_pretraining(tmp_path, flags, message):
    result = subprocess.run(_command(tmp_path, *flags), cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "sasrec").exists()  # SASRec was not pre-trained first


def test_hierarchical_then_plug_and_play(assets, tmp_path):
    first = tmp_path / "hierarchical"
    _run(_command(first, "--model_name_or_path", assets["llama"], "--sasrec_checkpoint", assets["sasrec"][0],
                  "--schedule", "hierarchical", "--max_steps", "3", "--projector_from_step", "1",
                  "--collab_from_step", "2"))
    second = tmp_path / "plug_and_play"
    _run(_command(second, "--model_name_or_path", assets["llama"], "--sasrec_checkpoint", assets["sasrec"][1],
                  "--schedule", "plug_and_play", "--pretrained_hybrid", first / "artifacts", "--max_steps", "2"))
    metrics = json.loads((second / "metrics.json").read_text())
    assert metrics["schedule"] == "plug_and_play" and "text_only_lora" not in metrics
    assert metrics["sasrec_checkpoint"] == str(assets["sasrec"][1])
    from safetensors.torch import load_file
    adapter = lambda d: load_file(d / "artifacts" / "adapter_model.safetensors")  # noqa: E731
    before, after = adapter(first), adapter(second)
    assert all((before[k] == after[k]).all() for k in before)  # LoRA untouched by plug-and-play
    assert (load_file(first / "artifacts" / "projector.safetensors")["mlp.0.weight"]
            != load_file(second / "artifacts" / "projector.safetensors")["mlp.0.weight"]).any()


def test_stages_end_on_their_best_checkpoint_by_valid_auc(assets, tmp_path):
    """eval_strategy + load_best_model_at_end: every stage logs eval_auc (valid rows scored like the test sets),
    ends on the checkpoint with the best one, and early stopping reads it."""
    result = _run(_command(tmp_path, "--model_name_or_path", assets["llama"],
                           "--sasrec_checkpoint", assets["sasrec"][0], "--max_steps", "4", "--learning_rate", "0.01",
                           "--max_valid_samples", "24", "--eval_strategy", "steps", "--eval_steps", "1",
                           "--save_steps", "1", "--load_best_model_at_end", "true", "--metric_for_best_model", "auc",
                           "--early_stopping_patience", "2"))
    from safetensors.torch import load_file
    ended_before_the_end = []
    for stage in ("text_stage", "hybrid_stage"):
        state = json.loads((tmp_path / stage / "trainer_state.json").read_text())
        aucs = {entry["step"]: entry["eval_auc"] for entry in state["log_history"] if "eval_auc" in entry}
        assert sorted(aucs) == list(range(1, state["global_step"] + 1)) and len(set(aucs.values())) > 1
        best_step = max(aucs, key=aucs.get)
        assert state["best_metric"] == aucs[best_step]
        assert state["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")
        steps_after_best = state["global_step"] - best_step
        assert state["global_step"] == 4 or steps_after_best >= 2  # stopped early only after 2 evals without gain
        for weights in ("adapter_model.safetensors", "projector.safetensors"):  # the stage ended on its best checkpoint
            final = load_file(tmp_path / stage / "final" / "collaborative_lm" / weights)
            best = load_file(tmp_path / stage / f"checkpoint-{best_step}" / "collaborative_lm" / weights)
            assert all(torch.equal(final[k], best[k]) for k in final)
        ended_before_the_end.append(best_step < state["global_step"])
        selected = json.loads((tmp_path / "metrics.json").read_text())["model_selection"][stage]
        assert selected["best_valid_auc"] == aucs[best_step] and selected["steps_trained"] == state["global_step"]
    assert any(ended_before_the_end)  # at least one stage really went back to an earlier checkpoint
    assert "best_valid_auc" in result.stdout  # the end-of-run summary shows the selection


def test_killed_run_resumes_to_the_same_metrics(assets, tmp_path):
    common = ["--model_name_or_path", assets["llama"], "--sasrec_checkpoint", assets["sasrec"][0],
              "--schedule", "hierarchical", "--max_steps", "6", "--save_steps", "2", "--projector_from_step", "1",
              "--collab_from_step", "3", "--lora_dropout", "0.1"]
    _run(_command(tmp_path / "uninterrupted", *common))
    expected = json.loads((tmp_path / "uninterrupted" / "metrics.json").read_text())

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(_command(interrupted, *common), cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    checkpoint = interrupted / "hybrid_stage" / "checkpoint-2" / "trainer_state.json"
    deadline = time.time() + 600
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (interrupted / "metrics.json").exists()
    result = _run(_command(interrupted, *common, "--resume_from_checkpoint", "true"))
    assert "resuming from" in result.stderr and "checkpoint-" in result.stderr
    resumed = json.loads((interrupted / "metrics.json").read_text())
    for model in ("sasrec", "sasrecllm"):
        for key, value in expected[model].items():
            if key != "eval_seconds":
                assert resumed[model][key] == pytest.approx(value, abs=1e-6), (model, key)
