"""The end-of-recipe summary (llmrec_ft/eval/report.py)."""

import pytest

from llmrec_ft.eval.report import format_metrics_table


def test_nested_metrics_become_aligned_tables_with_errors_and_artifacts():
    metrics = {"schedule": "dual_stage", "curve": [0.1, 0.2],
               "samples": {"train": 1200, "test_warm": 900},
               "sasrec": {"classifier": {"auc_all": 0.61234, "auc_all_se": 0.0123, "n_warm": 900}},
               "sasrecllm": {"auc_all": 0.7, "auc_all_se": 0.011, "n_warm": 900, "eval_seconds": 123.456},
               "text_only_lora": {"auc_all": None, "n_warm": 900}}
    text = format_metrics_table(metrics, {"metrics": "runs/x/metrics.json"}, title="SASRecLLM")
    lines = text.splitlines()
    assert lines[:2] == ["SASRecLLM", "schedule: dual_stage"]
    assert "curve" not in text  # lists stay in the JSON
    samples_header = next(line for line in lines if "test_warm" in line)
    assert samples_header.split() == ["train", "test_warm"]
    assert next(line for line in lines if line.startswith("samples")).split() == ["samples", "1,200", "900"]
    header = next(line for line in lines if "auc_all" in line)
    assert header.split() == ["auc_all", "n_warm", "eval_seconds"]  # auc_all_se folded into auc_all
    rows = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in
            ("sasrec/classifier", "sasrecllm", "text_only_lora")}
    assert rows["sasrec/classifier"].split() == ["sasrec/classifier", "0.6123", "±", "0.0123", "900", "-"]
    assert rows["sasrecllm"].split() == ["sasrecllm", "0.7000", "±", "0.0110", "900", "123.5"]
    assert rows["text_only_lora"].split() == ["text_only_lora", "-", "900", "-"]
    assert len({len(rows[name]) for name in rows}) == 1  # columns are aligned
    assert lines[-1] == "metrics: runs/x/metrics.json"


def test_ranking_splits_share_one_table():
    report = {"hr@10": 0.2, "ndcg@10": 0.1, "num_users": 943}
    text = format_metrics_table({"valid": {"all": report, "warm": report}, "test": {"all": report}})
    assert [line.split()[0] for line in text.splitlines()[2:]] == ["valid/all", "valid/warm", "test/all"]


def test_rejects_non_mappings():
    with pytest.raises(TypeError, match="metrics must be a mapping"):
        format_metrics_table([0.1, 0.2])


def test_a_wide_table_is_cut_into_tables_that_fit_100_columns_without_losing_a_number():
    groups = ("warm", "cold", "all")
    report = {**{f"n_{g}": 1000 for g in groups}, **{f"auc_{g}": 0.7123 for g in groups},
              **{f"auc_{g}_se": 0.0145 for g in groups}, **{f"uauc_{g}": 0.4315 for g in groups},
              **{f"uauc_users_{g}": 107 for g in groups}, "hr@10": 0.5931, "ndcg@10": 0.3122, "mrr@10": 0.2276,
              "eval_seconds": 192.86}
    metrics = {"sasrec": {"next_item": report, "classifier": report}, "sasrecllm": report, "text_only_lora": report}
    lines = format_metrics_table(metrics).splitlines()
    assert max(map(len, lines)) <= 100
    headers = [line.split() for i, line in enumerate(lines) if i + 1 < len(lines) and set(lines[i + 1]) == {"-"}]
    assert len(headers) > 1 and sorted(sum(headers, [])) == sorted(k for k in report if not k.endswith("_se"))
    for family in ("auc", "uauc", "uauc_users", "n"):  # a family's columns stay in one table
        assert sum(any(c.rsplit("_", 1)[0] == family for c in header) for header in headers) == 1, family
    for name in ("sasrec/next_item", "sasrecllm"):
        cells = [cell for line in lines if line.startswith(name + " ") for cell in line.split()[1:]]
        assert cells.count("0.7123") == 3 and cells.count("0.0145") == 3 and cells.count("1,000") == 3
        assert {"0.5931", "0.3122", "0.2276", "192.9", "107", "0.4315"} <= set(cells)
