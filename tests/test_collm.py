"""dataset: collm -- CoLLM's pointwise rows from Parquet or allow-listed pickles, and the paper preset end to end."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrec_ft.data import DataConfig, DataError, prepare_dataset
from llmrec_ft.data.collm import build_collm_dataset, load_pickled_frame
from llmrec_ft.train.pointwise_data import PointwiseConfig, build_pointwise_samples, warm_cold_test_sets

ROOT = Path(__file__).resolve().parents[1]
SHARED = next((base / "shared" / "data" / "collm-ml-1m" for base in (ROOT, ROOT.parent, ROOT.parent.parent)
               if (base / "shared" / "data" / "collm-ml-1m").is_dir()), ROOT.parent / "shared" / "data" / "collm-ml-1m")
TITLES = {i: f"Movie {i} (199{i % 10})" for i in range(1, 11)}


def synthetic_frames(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Four users rating items 1-8 in train; valid/test add cold items 9 and 10. ``his`` = earlier liked items."""
    rng = np.random.default_rng(seed)
    frames, liked, clock = {}, {u: [] for u in range(4)}, 1000
    for split, items in (("train", range(1, 9)), ("valid", (3, 9, 5, 10)), ("test", (2, 10, 6, 9, 7))):
        rows = []
        for item in items:
            for user in range(4):
                label = int(rng.random() < 0.6) if split == "train" else (user + item) % 2
                his = [0, *liked[user]]
                rows.append({"uid": user, "iid": item, "label": label, "timestamp": clock, "his": np.array(his),
                             "his_title": np.array(["", *(TITLES[i] for i in liked[user])]),
                             "title": TITLES[item], "flag": -1.0, "not_cold": int(item <= 8)})
                clock += 1
                if label:
                    liked[user].append(item)
        frames[split] = pd.DataFrame(rows)
    return frames


@pytest.fixture
def collm_folder(tmp_path):
    for split, frame in synthetic_frames().items():
        frame.to_parquet(tmp_path / f"{split}.parquet")
    return tmp_path


def test_parquet_to_prepared_layout(collm_folder, tmp_path):
    ds = prepare_dataset(DataConfig(dataset="collm", data_path=str(collm_folder)), output_dir=tmp_path / "prepared")
    assert {"collm_train", "collm_valid", "collm_test", "train", "valid", "test", "items"} <= set(ds)
    assert len(ds["collm_test"]) == 20 and len(ds["items"]) == 10
    assert ds["items"]["title"][8] == TITLES[9] and ds["items"]["is_cold"][8]  # item 9 never in train
    row = ds["collm_test"][0]
    frame = synthetic_frames()["test"]
    assert row["history"] == [i for i in frame["his"][0] if i] and row["candidate"] == 2 and row["position"] == 1
    # SASRec sequences: liked training items in time order, leave-one-out
    train = synthetic_frames()["train"]
    user = ds["test"][0]["user_id"]
    liked = train[(train.uid == user) & (train.label == 1)].sort_values("timestamp")["iid"].tolist()
    assert [*ds["test"][0]["history"], ds["test"][0]["target"]] == liked

    config = PointwiseConfig(max_history=2, cf_max_len=3)
    samples = build_pointwise_samples(ds, config)
    assert len(samples["train"]) == 32 and len(samples["test"]) == 20
    full = ds["collm_test"]["history"]
    assert all(s["history"] == h[-2:] and s["cf_history"] == h[-3:] for s, h in zip(samples["test"], full))
    groups = warm_cold_test_sets(samples, config)
    assert set(groups["cold"]["candidate"]) == {9, 10}
    assert set(groups["warm"]["candidate"]) == {2, 6, 7}


def _rewrite(folder, split, change):
    frame = synthetic_frames()[split]
    change(frame)
    frame.to_parquet(folder / f"{split}.parquet")


@pytest.mark.parametrize("change, field, row", [
    (lambda f: f.__delitem__("not_cold"), None, None),
    (lambda f: f.__setitem__("label", [*f["label"][:4], 2, *f["label"][5:]]), "label", 5),
    (lambda f: f.at.__setitem__((2, "his_title"), np.array(["x", "y", "z", "w", "v", "u", "t"])), "his_title", 3),
    (lambda f: f.__setitem__("iid", [0, *f["iid"][1:]]), "iid", 1),
])
def test_bad_rows_name_file_row_and_field(collm_folder, change, field, row):
    _rewrite(collm_folder, "train", change)
    with pytest.raises(DataError) as err:
        build_collm_dataset(collm_folder)
    assert err.value.path.endswith("train.parquet") and err.value.field == field and err.value.row == row


def test_conflicting_titles_are_named(collm_folder):
    _rewrite(collm_folder, "test", lambda f: f.at.__setitem__((3, "title"), "Another title"))
    with pytest.raises(DataError, match="item 2 is titled 'Another title'") as err:
        build_collm_dataset(collm_folder)
    assert err.value.row == 4 and err.value.field == "title"


def test_allow_list_unpickler_reads_dataframes(tmp_path):
    frames = synthetic_frames()
    for split, frame in frames.items():
        for protocol in (2, 4, 5):
            path = tmp_path / f"{split}-{protocol}.pkl"
            path.write_bytes(pickle.dumps(frame, protocol=protocol))
            pd.testing.assert_frame_equal(load_pickled_frame(path), frame)
        (tmp_path / f"{split}.pkl").write_bytes(pickle.dumps(frame))
    parquet_dir = tmp_path / "parquet"
    parquet_dir.mkdir()
    for split, frame in frames.items():
        frame.to_parquet(parquet_dir / f"{split}.parquet")
    from_pickles, _ = build_collm_dataset(tmp_path)
    from_parquet, _ = build_collm_dataset(parquet_dir)
    for split in from_parquet:
        assert from_pickles[split].to_list() == from_parquet[split].to_list(), split


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


class _Evil:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("payload, refused", [(_Exploit(), "system"), (_Evil(), "builtins.eval"),
                                              ({"frame": _Exploit()}, "system")])
def test_allow_list_unpickler_refuses_code(tmp_path, payload, refused):
    path = tmp_path / "train.pkl"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(DataError, match=f"refusing to unpickle global .*{refused}") as err:
        load_pickled_frame(path)
    assert err.value.path == str(path)


def test_non_dataframe_and_corrupt_pickles(tmp_path):
    path = tmp_path / "a.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match="expected a pandas DataFrame, the pickle holds a list"):
        load_pickled_frame(path)
    path.write_bytes(pickle.dumps(synthetic_frames()["test"])[:200])
    with pytest.raises(DataError, match="not a readable pickle"):
        load_pickled_frame(path)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/collm-ml-1m not present")
def test_shared_collm_counts_match_its_readme():
    dataset, info = build_collm_dataset(SHARED)
    counts = json.loads((SHARED / "counts.json").read_text())
    for split in ("train", "valid", "test"):
        assert info["counts"][split]["rows"] == counts[split]["rows"]
        assert info["counts"][split]["users"] == counts[split]["users"]
        assert abs(info["counts"][split]["not_cold_mean"] - counts[split]["not_cold_mean"]) < 1e-3


def test_paper_preset_end_to_end(collm_folder, tmp_path):
    """recipes/configs/sasrecllm_collm_paper.yaml on a tiny Llama: CoLLM prompt, BCE on Yes, AUC and UAUC."""
    from llmrec_ft.train.tiny import save_tiny_backbone

    llama = save_tiny_backbone(tmp_path / "tiny-llama", "llama", hidden_size=32, num_layers=2)
    command = [sys.executable, str(ROOT / "recipes" / "sasrecllm.py"), "--config",
               str(ROOT / "recipes" / "configs" / "sasrecllm_collm_paper.yaml"), "--output_dir", str(tmp_path / "run"),
               "--model_name_or_path", str(llama), "--data_path", str(collm_folder), "--dtype", "float32",
               "--bf16", "false", "--use_cpu", "true", "--max_steps", "2", "--text_stage_max_steps", "2",
               "--per_device_train_batch_size", "4", "--sasrec_epochs", "1", "--disable_tqdm", "true"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "LLMREC_FT_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["samples"]["test_warm"] == 12 and metrics["samples"]["test_cold"] == 8
    for model in ("text_only_lora", "sasrecllm"):
        report = metrics[model]
        assert {"auc_all", "uauc_all", "auc_warm", "auc_cold", "uauc_users_all"} <= set(report), model
        assert 0 <= report["auc_all"] <= 1 and report["uauc_users_all"] == 4
        assert "hr@10" not in report  # sampled ranking is off in the paper preset
