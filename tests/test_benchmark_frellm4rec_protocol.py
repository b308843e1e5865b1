"""The FreLLM4Rec protocol benchmark's bookkeeping (the runs themselves are the recipe, tested elsewhere)."""

import json
import runpy
import sys
from pathlib import Path

import pytest

BENCH = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "frellm4rec_protocol.py"))


def test_leak_switch_is_run_only_where_tfm_is_on():
    assert BENCH["runs_of"]("no filter") == BENCH["runs_of"]("+G-LPF") == [("either", "false")]
    assert BENCH["runs_of"]("+TFM") == BENCH["runs_of"]("+G-LPF +TFM") == [("leak", "true"), ("no leak", "false")]


def test_missing_beauty_is_skipped_cleanly(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("LLMREC_FT_SHARED_DATA", str(tmp_path))
    monkeypatch.setitem(BENCH["dataset_flags"].__globals__, "ROOT", tmp_path)
    assert BENCH["dataset_flags"]("amazon-beauty") is None and "skipped" in capsys.readouterr().out
    (tmp_path / "amazon14-beauty").mkdir()
    (tmp_path / "amazon14-beauty" / "sequences.txt").write_text("1 1 2 3\n")
    flags = BENCH["dataset_flags"]("amazon-beauty")
    assert flags[:2] == ["--dataset", "sequences"] and flags[3].endswith("sequences.txt")


def test_markdown_table_has_both_metrics():
    row = {f"{p} {m}": BENCH["summarize"]([0.1, 0.3]) for p in ("sampled", "full") for m in ("ndcg@10", "hr@10")}
    text = BENCH["markdown"]({"ml-100k | +TFM | leak": row}, "cpu")
    assert "| ml-100k | +TFM | leak | 2 | 0.2000 ± 0.1414 |" in text and "full hr@10" in text


def test_table_pools_seeds_and_fills_both_leak_rows_without_tfm():
    def run(value):
        return {"metrics": {"sampled ndcg@10": value, "full ndcg@10": value / 10}}
    runs = {"ml-100k | no filter | either | seed0": run(0.1), "ml-100k | no filter | either | seed1": run(0.3),
            "ml-100k | +TFM | leak | seed0": run(0.5), "ml-100k | +TFM | no leak | seed0": run(0.2)}
    table = BENCH["table_of"](runs)
    assert list(table) == ["ml-100k | no filter | leak", "ml-100k | no filter | no leak", "ml-100k | +TFM | leak",
                           "ml-100k | +TFM | no leak"]
    assert table["ml-100k | no filter | no leak"]["sampled ndcg@10"]["per_seed"] == [0.1, 0.3]
    assert table["ml-100k | +TFM | no leak"]["full ndcg@10"]["mean"] == 0.02


def _results_file(path, runs, backbone="smollm2-135m-instruct", budget="gpu"):
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"backbone": backbone, "budget_flags": BENCH["BUDGETS"][budget], "runs": runs}
    path.write_text(json.dumps({budget: entry}))
    return path


def test_merge_joins_processes_and_rebuilds_the_table(tmp_path, monkeypatch):
    def run(value):
        return {"metrics": {f"{p} {m}": value for p in ("sampled", "full") for m in ("ndcg@10", "hr@10")}}
    first = _results_file(tmp_path / "a" / "f.json", {"ml-100k | +TFM | leak | seed0": run(0.5)})
    second = _results_file(tmp_path / "b" / "f.json", {"ml-100k | +TFM | leak | seed1": run(0.3),
                                                      "ml-100k | +TFM | leak | seed0": run(0.5)})
    monkeypatch.setattr(sys, "argv", ["x", "--budget", "gpu", "--results_dir", str(tmp_path / "out"),
                                      "--merge", str(first), str(second)])
    BENCH["main"]()
    stored = json.loads((tmp_path / "out" / "frellm4rec_protocol.json").read_text())["gpu"]
    assert sorted(stored["runs"]) == ["ml-100k | +TFM | leak | seed0", "ml-100k | +TFM | leak | seed1"]
    assert stored["table"]["ml-100k | +TFM | leak"]["sampled ndcg@10"]["per_seed"] == [0.5, 0.3]


def test_merge_refuses_missing_files_other_backbones_flags_and_conflicting_runs(tmp_path):
    merged_runs = BENCH["merged_runs"]
    key = "ml-100k | +TFM | leak | seed0"
    with pytest.raises(SystemExit, match="no such file"):
        merged_runs([tmp_path / "missing.json"], "gpu", "smollm2-135m-instruct", {})
    other = _results_file(tmp_path / "o.json", {key: {"metrics": {"x": 1.0}}}, backbone="gemma3-270m")
    with pytest.raises(SystemExit, match="backbone 'gemma3-270m'"):
        merged_runs([other], "gpu", "smollm2-135m-instruct", {})
    flags = tmp_path / "f.json"
    flags.write_text(json.dumps({"gpu": {"backbone": "smollm2-135m-instruct", "budget_flags": ["--max_steps", "1"],
                                         "runs": {}}}))
    with pytest.raises(SystemExit, match="budget flags"):
        merged_runs([flags], "gpu", "smollm2-135m-instruct", {})
    one = _results_file(tmp_path / "1.json", {key: {"metrics": {"x": 1.0}}})
    two = _results_file(tmp_path / "2.json", {key: {"metrics": {"x": 2.0}}})
    with pytest.raises(SystemExit, match="differs"):
        merged_runs([one, two], "gpu", "smollm2-135m-instruct", {})
    with pytest.raises(SystemExit, match="differs"):  # against a run already stored in the results file
        merged_runs([two], "gpu", "smollm2-135m-instruct", {key: {"metrics": {"x": 1.0}}})


def test_the_sasrec_row_comes_from_the_no_filter_runs_once_per_seed():
    def run(value, with_sasrec=True):
        entry = {"metrics": {"sampled ndcg@10": value}}
        return {**entry, "sasrec": {"sampled ndcg@10": 2 * value}} if with_sasrec else entry
    runs = {"ml-100k | no filter | either | seed0": run(0.1), "ml-100k | no filter | either | seed1": run(0.2),
            "ml-100k | +TFM | leak | seed0": run(0.5), "ml-100k | +G-LPF | either | seed2": run(0.3, False)}
    table = BENCH["table_of"](runs)
    assert list(table)[-1] == "ml-100k | SASRec (ID only) | -"
    assert table["ml-100k | SASRec (ID only) | -"]["sampled ndcg@10"]["per_seed"] == [0.2, 0.4]
