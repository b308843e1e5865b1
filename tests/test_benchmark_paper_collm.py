"""benchmarks/paper_collm.py's bookkeeping (the recipe runs themselves are tested in test_recipe_sasrecllm.py)."""

import json
import runpy
import sys
from pathlib import Path

import pytest

BENCH = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "paper_collm.py"))


def test_a_finished_run_is_reused_only_with_the_same_recipe_arguments(tmp_path):
    run = tmp_path / "seed0"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"auc": 0.7}))
    (tmp_path / "seed0.args.json").write_text(json.dumps(["--seed=0", "--eval_steps", "200"]))
    assert BENCH["run_recipe"](run, {"seed": 0}, ["--eval_steps", "200"]) == {"auc": 0.7}  # nothing re-run
    with pytest.raises(SystemExit, match="was run with"):
        BENCH["run_recipe"](run, {"seed": 0}, ["--eval_steps", "100"])


def test_recipe_arguments_this_script_sets_are_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["paper_collm.py", "--data_path", str(tmp_path), "--", "--seed", "1"])
    with pytest.raises(SystemExit, match="set by this script"):
        BENCH["main"]()
