"""benchmarks/generative_beauty.py builds one table over several calls and processes: runs of earlier result files
are merged by seed, and a file on other data or users is refused."""

import json
import runpy
from pathlib import Path

import pytest

BENCH = runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "generative_beauty.py"))


def _run(seed: int, ndcg: float) -> dict:
    metrics = {"hr@10": 2 * ndcg, "ndcg@10": ndcg}
    return {"seed": seed, "exclude_history": metrics, "include_history": metrics, "train_s": 1.0, "eval_s": 1.0}


def _results(data: str, rows: dict, eval_users: int = 4000) -> dict:
    return {"config": {"data": data, "eval_users": eval_users, "model": "m", "num_beams": 20, "max_history": 20},
            "counts": {"users": 10, "items": 5},
            "rows": {row: BENCH["summarise"](runs) for row, runs in rows.items()}}


def test_merge_runs_by_seed_across_files(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(_results("/tmp/data/beauty", {"sid": [_run(0, 0.1), _run(1, 0.2)]})))
    second.write_text(json.dumps(_results("/elsewhere/beauty", {"sid": [_run(1, 0.3), _run(2, 0.4)],
                                                                 "title": [_run(0, 0.5)]})))
    current = _results("../shared/data/beauty", {})
    merged = BENCH["earlier_runs"](first, current)
    for row, runs in BENCH["earlier_runs"](second, current).items():
        merged[row] = BENCH["merge_runs"](merged.get(row, []), runs)
    assert [(r["seed"], r["include_history"]["ndcg@10"]) for r in merged["sid"]] == [(0, 0.1), (1, 0.3), (2, 0.4)]
    assert [r["seed"] for r in merged["title"]] == [0]
    assert BENCH["summarise"](merged["sid"])["summary"]["include_history/ndcg@10"]["mean"] == pytest.approx(0.8 / 3)
    assert len(current["config"]["earlier_calls"]) == 2


@pytest.mark.parametrize("change", [dict(data="/tmp/data/yelp"), dict(eval_users=0), dict(counts=True)])
def test_a_file_on_other_data_or_users_is_refused(tmp_path, change):
    path = tmp_path / "a.json"
    earlier = _results(change.get("data", "/tmp/data/beauty"), {"sid": [_run(0, 0.1)]}, change.get("eval_users", 4000))
    if "counts" in change:
        earlier["counts"]["users"] = 11
    path.write_text(json.dumps(earlier))
    with pytest.raises(SystemExit, match="same data and users"):
        BENCH["earlier_runs"](path, _results("/x/beauty", {}))


@pytest.mark.parametrize("argv, message", [(["--rows"], "--rows is empty"),
                                           (["--rows", "--merge", "missing.json"], "missing.json does not exist")])
def test_bad_command_lines_stop_before_any_work(tmp_path, monkeypatch, argv, message):
    output = tmp_path / "table.json"
    monkeypatch.setattr("sys.argv", ["generative_beauty.py", "--data", str(tmp_path), "--output", str(output), *argv])
    with pytest.raises(SystemExit, match=message):
        BENCH["main"]()
    assert not output.exists()
