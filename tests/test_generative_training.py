"""Generative examples, training and evaluation on a tiny random LM (LM head tied or not): what the SFT data
contain, that training moves LoRA and the code-token rows, that the saved adapter holds only those, and that the
fast decoder, the HF reference and a reload agree."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from trl import SFTConfig

from llmrec_ft.collab.sasrec import SASRec, SASRecConfig
from llmrec_ft.data import DataConfig, build_dataset
from llmrec_ft.generative.evaluate import CatalogDecoder, evaluate_generative, recommend_from_prompts, top_k_scores
from llmrec_ft.generative.examples import ExampleConfig, GenerativeExamples, next_item_examples
from llmrec_ft.generative.semantic_ids import build_semantic_ids
from llmrec_ft.generative.tokens import add_code_tokens, code_tokens, vocabulary
from llmrec_ft.generative.training import (GenerativeModelArgs, build_generative_model, final_dir,
                                           load_generative_model, train_generative)
from llmrec_ft.llm.backbone import load_backbone
from llmrec_ft.train.tiny import save_tiny_backbone

NUM_ITEMS = 30


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """20 users over 30 items; items 29 and 30 are only ever valid/test targets (never in a training sequence)."""
    root = tmp_path_factory.mktemp("generative")
    lines = [" ".join([str(u), *(str((u * 3 + j) % 28 + 1) for j in range(5)), "29", "30"]) for u in range(1, 21)]
    (root / "seq.txt").write_text("\n".join(lines) + "\n")
    titles = [f"Item number {i}" for i in range(1, NUM_ITEMS + 1)]
    titles[1] = titles[0]  # two items with one title: a title stands for both
    (root / "items.tsv").write_text("item_id\ttitle\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(titles, 1)))
    ds, _ = build_dataset(DataConfig(dataset="sequences", data_path=str(root / "seq.txt"),
                                     item_path=str(root / "items.tsv")))
    sids = build_semantic_ids(np.random.default_rng(0).normal(size=(NUM_ITEMS, 8)), num_levels=2, codebook_size=4)
    return {"root": root, "ds": ds, "sids": sids, "backbone": save_tiny_backbone(root / "tiny", hidden_size=32),
            "untied_backbone": save_tiny_backbone(root / "untied", hidden_size=32, tie_word_embeddings=False)}


def _examples(tokenizer, setup, code_ids, **config):
    return GenerativeExamples(tokenizer, setup["ds"]["items"]["title"], ExampleConfig(**config),
                              ["".join(t) for t in code_tokens(setup["sids"])], code_ids)


def _model(setup, sasrec=None):
    return build_generative_model(GenerativeModelArgs(model_name_or_path=str(setup["backbone"]), lora_r=4),
                                  setup["sids"], sasrec)


def test_every_training_prefix_and_no_heldout_target(setup):
    ds = setup["ds"]
    train = next_item_examples(ds, "train", keep_history=3)
    assert len(train) == sum(len(items) - 1 for items in ds["train"]["items"])
    assert train[0]["history"] == ds["train"][0]["items"][:1] and train[3]["history"] == ds["train"][0]["items"][1:4]
    _, tokenizer, code_ids = _model(setup)
    for task in ("next_sid", "next_title"):
        examples = _examples(tokenizer, setup, code_ids, task=task, max_history=3,
                             alignment_tasks=[] if task == "next_title" else ["codes_to_title"])
        data = examples.training_dataset(ds)
        held_out = [examples.item_token_ids(task)[i - 1] for i in (29, 30)]
        completions = [[t for t, m in zip(row["input_ids"], row["completion_mask"]) if m] for row in data]
        for target in held_out:
            target = [t for t in target.tolist() if t >= 0]
            assert target not in completions, task  # valid/test targets are never a next-item completion
        n_next = len(train)
        assert len(data) == n_next + (NUM_ITEMS if task == "next_sid" else 0)
        assert sum(c == examples.item_token_ids(task)[0][: len(c)].tolist() for c in completions) >= 1


def test_prompts_show_codes_titles_and_placeholders(setup):
    _, tokenizer, code_ids = _model(setup)
    history = [3, 1, 4, 5]
    text = _examples(tokenizer, setup, code_ids, history_format="codes", max_history=2).prompt_text(history)
    codes = ["".join(t) for t in code_tokens(setup["sids"])]
    assert codes[3] in text and codes[4] in text and codes[0] not in text and "Item number" not in text
    text = _examples(tokenizer, setup, code_ids, task="next_title", history_format="titles",
                     collaborative_tokens=True, max_history=3).prompt_text(history)
    assert text.count("<|item_cf|>") == 3 and text.count("<|user_cf|>") == 1 and codes[3] not in text
    assert '"Item number 5" <|item_cf|>' in text


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def trained(request, setup, tmp_path_factory):
    """A model trained 3 steps on the tiny backbone with a tied or an untied LM head, its saved folder, and its
    trainable parameters and embedding rows before training."""
    backbone = setup["backbone" if request.param else "untied_backbone"]
    out = tmp_path_factory.mktemp("trained")
    model, tokenizer, code_ids = build_generative_model(
        GenerativeModelArgs(model_name_or_path=str(backbone), lora_r=4), setup["sids"])
    assert model.config.tie_word_embeddings == request.param
    examples = _examples(tokenizer, setup, code_ids, max_history=3)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        rows_before = model.get_input_embeddings()(torch.arange(len(tokenizer))).clone()
    args = SFTConfig(output_dir=str(out), max_steps=3, per_device_train_batch_size=8, learning_rate=1e-2,
                     report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True)
    train_generative(model, tokenizer, examples.training_dataset(setup["ds"]), args)
    return SimpleNamespace(model=model, examples=examples, code_ids=code_ids, saved=final_dir(out, False),
                           backbone=backbone, tied=request.param, before=before, rows_before=rows_before)


def test_training_moves_lora_and_code_rows_only(trained):
    model, before, rows_before = trained.model, trained.before, trained.rows_before
    assert any("lora_" in n for n in before) and any("trainable_tokens" in n for n in before)
    moved = {n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])}
    assert any("lora_" in n for n in moved) and any("embed_tokens.token_adapter" in n for n in moved)
    if not trained.tied:  # the untied head's code rows train too, in their own TrainableTokensLayer
        assert any("lm_head.token_adapter" in n for n in moved)
    code_rows, other = trained.code_ids.flatten().unique(), torch.ones(len(rows_before), dtype=torch.bool)
    other[code_rows] = False
    with torch.no_grad():  # only the code-token rows of the embedding moved
        rows_after = model.get_input_embeddings()(torch.arange(len(rows_before)))
    assert torch.equal(rows_after[other], rows_before[other])
    assert (rows_after[code_rows] != rows_before[code_rows]).any(dim=1).all()


def test_saved_adapter_holds_only_lora_and_code_rows(trained, setup):
    """No ``[V, H]`` matrix in the adapter (PEFT's default adds both when the vocabulary was resized): LoRA, the
    input code rows and, for an untied head, its code rows -- each the trained row's full value, not a delta."""
    model, adapter = trained.model, trained.saved / "adapter_model.safetensors"
    rows = {name: t for name, t in load_file(adapter).items() if "lora_" not in name}
    assert sorted(name.split(".")[-3] for name in rows) == ["embed_tokens"] + ["lm_head"] * (not trained.tied)
    num_codes, hidden = len(vocabulary(setup["sids"])), model.get_input_embeddings().weight.shape[1]
    for name, value in rows.items():
        assert name.endswith("token_adapter.trainable_tokens_delta") and value.shape == (num_codes, hidden)
        layer = model.get_output_embeddings() if "lm_head" in name else model.get_input_embeddings()
        assert torch.equal(value, layer.token_adapter.trainable_tokens_delta["default"])
    embedding_bytes = model.get_input_embeddings().weight.numel() * 4
    assert adapter.stat().st_size < embedding_bytes / 20  # 6.3 MB per matrix here; the adapter is 11-13 kB


def test_reload_gives_the_same_logits_and_top_k(trained, setup):
    model, examples, ds = trained.model, trained.examples, setup["ds"]
    decoder = CatalogDecoder.from_examples(examples, model.get_input_embeddings().weight.shape[0])
    fast = evaluate_generative(model, examples, decoder, ds, "test", ks=(5, 10), num_beams=10)
    _assert_same_ranking(model, examples, decoder, ds)
    reloaded, _, _ = load_generative_model(trained.saved, GenerativeModelArgs(model_name_or_path=str(trained.backbone)),
                                           setup["sids"])
    _assert_same_logits(model, reloaded, examples, trained.code_ids, ds)
    again = evaluate_generative(reloaded, examples, decoder, ds, "test", ks=(5, 10), num_beams=10)
    assert again["top_k"] == fast["top_k"]  # the shipped folder recommends what the live model did
    _assert_same_ranking(reloaded, examples, decoder, ds)
    for row, history in zip(fast["top_k"]["exclude_history"], ds["test"]["history"]):
        assert len(set(row)) == len(row) and not set(row) & set(history)  # distinct, history excluded


def test_reload_does_not_depend_on_the_base_rows_of_the_code_tokens(trained, setup):
    """The adapter carries the trained rows' values: with the new rows of the rebuilt base drawn at random (what
    transformers' ``mean_resizing`` does, under whatever seed), the reload's logits are still the live model's."""
    lm, tokenizer = load_backbone(str(trained.backbone))
    old_rows = lm.get_input_embeddings().weight.shape[0]
    add_code_tokens(tokenizer, lm, setup["sids"])
    torch.manual_seed(1234)
    with torch.no_grad():
        for layer in (lm.get_input_embeddings(), lm.get_output_embeddings()):  # tied: the same weight twice
            layer.weight[old_rows:] = torch.randn_like(layer.weight[old_rows:])
    reloaded = PeftModel.from_pretrained(lm, str(trained.saved)).eval()
    _assert_same_logits(trained.model, reloaded, trained.examples, trained.code_ids, setup["ds"])


def _assert_same_logits(live, reloaded, examples, code_ids, ds):
    """Live trained model vs its reload, on test prompts followed by their target's codes: the same fp32 logits,
    bit for bit. Before ``train_generative`` removed Accelerate's bf16 autocast wrapper they differed by ~3e-3."""
    rows = next_item_examples(ds, "test", 100)[:4]
    with torch.no_grad():
        for prompt, row in zip(examples.encode_prompts(rows), rows):
            input_ids = torch.tensor([prompt["input_ids"] + code_ids[row["target"] - 1].tolist()])
            torch.testing.assert_close(live(input_ids=input_ids).logits, reloaded(input_ids=input_ids).logits,
                                       atol=0, rtol=0)


def _assert_same_ranking(model, examples, decoder, ds):
    """Fast path vs ``generate`` on the trained model: the same log-probabilities up to fp32 rounding (the fast path
    attends over a beam tree, ``generate`` over copied prompts), hence the same item at every rank whose score is
    apart from its neighbours' by more than that rounding. The exact identity on an untrained model is engineer A's
    test (tests/test_generative_decoding.py)."""
    rows = next_item_examples(ds, "test", 100)
    prompts, histories = examples.encode_prompts(rows), [r["history"] for r in rows]
    pad_id = examples.tokenizer.pad_token_id
    fast = recommend_from_prompts(model, decoder, prompts, histories, pad_id, k=10, num_beams=10, batch_size=8)
    hf = recommend_from_prompts(model, decoder, prompts, histories, pad_id, k=10, num_beams=10, batch_size=8,
                                decoding="hf")
    torch.testing.assert_close(fast[1], hf[1], atol=1e-5, rtol=0)
    apart = fast[1].diff(dim=1).abs() > 1e-5
    clear = torch.ones_like(fast[0], dtype=torch.bool)
    clear[:, 1:] &= apart
    clear[:, :-1] &= apart
    assert clear.float().mean() > 0.5 and torch.equal(fast[0][clear], hf[0][clear])


def test_titles_and_collaborative_tokens(setup, tmp_path):
    sasrec = SASRec(SASRecConfig(num_items=NUM_ITEMS, hidden_size=16, num_blocks=1, max_len=20))
    model, tokenizer, code_ids = _model(setup, sasrec)
    examples = _examples(tokenizer, setup, code_ids, task="next_title", history_format="titles",
                         collaborative_tokens=True, max_history=3, cf_max_len=10)
    data = examples.training_dataset(setup["ds"])
    assert {"labels", "cf_history", "cf_items"} <= set(data.column_names)
    args = SFTConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to=[],
                     use_cpu=True, save_strategy="no", disable_tqdm=True)
    train_generative(model, tokenizer, data, args)
    decoder = CatalogDecoder.from_examples(examples, model.lm.get_input_embeddings().weight.shape[0])
    assert decoder.row_items[0] == [1, 2]  # the shared title
    report = evaluate_generative(model, examples, decoder, setup["ds"], "test", ks=(5,), num_beams=5)
    for row in report["top_k"]["include_history"]:
        assert len(set(row)) == len(row) and all(1 <= i <= NUM_ITEMS for i in row)
    adapter = load_file(final_dir(tmp_path, True) / "adapter_model.safetensors")
    assert not any(name.endswith("base_layer.weight") for name in adapter)  # code rows, not the resized matrices
    reloaded, _, _ = load_generative_model(final_dir(tmp_path, True),
                                           GenerativeModelArgs(model_name_or_path=str(setup["backbone"])),
                                           setup["sids"], sasrec)
    again = evaluate_generative(reloaded, examples, decoder, setup["ds"], "test", ks=(5,), num_beams=5)
    assert again["top_k"] == report["top_k"]  # projector, LoRA and code rows reload to the same recommendations


def test_top_k_scores_rank_the_list_in_order():
    scores = top_k_scores(torch.tensor([[3, 1, 0]]), num_items=4)
    assert scores.tolist() == [[0.0, 2.0, 0.0, 3.0, 0.0]]
