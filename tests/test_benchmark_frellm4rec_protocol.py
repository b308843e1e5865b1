"""The FreLLM4Rec protocol benchmark's bookkeeping (the runs themselves are the recipe, tested elsewhere)."""

import runpy
from pathlib import Path

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
