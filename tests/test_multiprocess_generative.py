"""The generative recipe under 2 CPU processes (torchrun + gloo, as tests/test_multiprocess.py explains) on the
embedded model with a tiny budget: DDP training, users sharded in evaluation, files written once; and the same
saved artifacts evaluated with 1 and with 2 processes give identical top-K lists and metrics.

The comparison is on one trained adapter (the 2-process run's artifacts), so training's dependence on the
process count (another reduction order) plays no part: the claim is that sharding the evaluation changes
nothing. 8 users in batches of 3 make 3 batches, split 2 + 1 (users 0-5 and 6-7)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmrec_ft.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
RECIPE, CONFIG = ROOT / "recipes" / "generative.py", ROOT / "recipes" / "configs" / "generative_ml100k.yaml"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
USERS, BATCH = 8, 3


def _run(command):
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, env=ENV)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def _without_timings(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("eval_seconds", "users_per_process")}


@pytest.mark.slow  # 2-3 minutes on 2 shared CPU cores: three launches of the embedded model
def test_two_processes_train_and_evaluate_as_one(tmp_path):
    output = tmp_path / "run"
    _run([*TORCHRUN, str(RECIPE), "--use_cpu", "true", "--config", str(CONFIG), "--output_dir", str(output),
          "--max_steps", "2", "--max_train_examples", "8", "--per_device_train_batch_size", "4",
          "--eval_users", str(USERS), "--eval_batch_size", str(BATCH), "--num_beams", "10", "--eval_ks", "5", "10",
          "--max_history", "3", "--disable_tqdm", "true"])
    metrics = json.loads((output / "metrics.json").read_text())
    state = json.loads((output / "trainer_state.json").read_text())
    # 2 steps of 4 examples on each of 2 processes: an epoch is ceil(N / 8) steps long (one process: N / 4)
    assert state["epoch"] == 2 / math.ceil(metrics["train_examples"] / 8)
    assert metrics["test"]["num_users"] == USERS and metrics["test"]["users_per_process"] == [6, 2]
    assert (output / "artifacts" / "adapter_model.safetensors").exists()
    assert not [p.name for p in output.rglob(".*")]  # no temporary file of a racing second writer left behind

    out_1, out_2 = tmp_path / "eval_1.json", tmp_path / "eval_2.json"
    args = ["--model", str(output / "artifacts"), "--device", "cpu"]
    assert cli_main(["evaluate", *args, "--out", str(out_1)]) == 0  # this (1-process) pytest process
    _run([*TORCHRUN, "-m", "llmrec_ft.cli", "evaluate", *args, "--out", str(out_2)])
    one, two = json.loads(out_1.read_text()), json.loads(out_2.read_text())
    assert (one["users_per_process"], two["users_per_process"]) == ([USERS], [6, 2])
    assert _without_timings(one) == _without_timings(two)
    assert len(one["top_k"]["exclude_history"]) == USERS and any(any(row) for row in one["top_k"]["exclude_history"])
    # the recipe's own (2-process) evaluation of the same adapter gave the same lists and metrics
    assert json.loads((output / "test_top_k.json").read_text()) == one["top_k"]
    for protocol in ("exclude_history", "include_history"):
        assert metrics["test"][protocol] == one[protocol]



def test_evaluate_refuses_a_non_generative_folder(tmp_path, capsys):
    from llmrec_ft.collab.sasrec import SASRec, SASRecConfig

    SASRec(SASRecConfig(num_items=5, hidden_size=8, num_blocks=1, max_len=4)).save_pretrained(tmp_path / "sasrec")
    out = tmp_path / "eval.json"
    assert cli_main(["evaluate", "--model", str(tmp_path / "sasrec"), "--out", str(out)]) == 2
    assert "not a generative artifact folder" in capsys.readouterr().err and not out.exists()
