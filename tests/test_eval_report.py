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
