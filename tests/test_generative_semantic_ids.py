"""Semantic IDs (residual k-means, RQ-VAE), their stats and plot, and the code tokens added to a tiny LM."""

import warnings

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from llmrec_ft.generative.semantic_ids import (SemanticIDs, auto_codebook_size, build_semantic_ids,
                                               concat_embeddings, plot_code_usage)
from llmrec_ft.generative.tokens import add_code_tokens, code_tokens, trainable_token_indices
from test_prompts import tiny_tokenizer


def test_stats_on_a_hand_made_catalogue():
    # items 0,1 share (0, 0); item 2 shares level-1 code 0 with them; item 3 is alone
    sids = SemanticIDs.with_collision_level(np.array([[0, 0], [0, 0], [0, 1], [1, 2]]), [2, 4])
    assert sids.codes.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 2, 0]]
    assert sids.codebook_sizes == [2, 4, 2]
    stats = sids.stats()
    assert stats["levels"][0] == {"level": 1, "codebook_size": 2, "codes_used": 1.0, "items_colliding": 0.75,
                                  "max_items_per_prefix": 3}
    assert stats["levels"][1] == {"level": 2, "codebook_size": 4, "codes_used": 0.75, "items_colliding": 0.5,
                                  "max_items_per_prefix": 2}
    assert stats["collision_rate"] == 0.5 and stats["max_items_per_code"] == 2


def test_collision_level_numbers_items_in_item_order_within_each_group():
    codes = np.array([[3, 1], [0, 0], [3, 1], [3, 1], [0, 0]])
    sids = SemanticIDs.with_collision_level(codes, [4, 2])
    assert sids.codes[:, -1].tolist() == [0, 0, 1, 2, 1]
    assert sids.codebook_sizes[-1] == 3
    assert len({tuple(r) for r in sids.codes}) == len(codes)


def test_invalid_codes_are_rejected_with_the_item_row():
    with pytest.raises(ValueError, match="item row 2, level 1"):
        SemanticIDs(np.array([[0, 0], [5, 0]]), [4, 1])
    with pytest.raises(ValueError, match="same semantic ID"):
        SemanticIDs(np.array([[0, 0], [0, 0]]), [4, 1])


def test_auto_codebook_size_rule():
    assert auto_codebook_size(12101) == 256 and auto_codebook_size(3706) == 128
    assert auto_codebook_size(1000) == 64 and auto_codebook_size(50) == 16 and auto_codebook_size(2) == 4
    assert auto_codebook_size(12101, codebook_size=64) == 64


def clustered(num_clusters=4, per_cluster=30, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_clusters, dim)) * 20
    labels = np.repeat(np.arange(num_clusters), per_cluster)
    return centres[labels] + rng.normal(size=(len(labels), dim)), labels


def test_residual_kmeans_first_level_recovers_well_separated_clusters_and_ids_are_unique():
    x, labels = clustered()
    sids = build_semantic_ids(x, num_levels=2, codebook_size=4, seed=0)
    assert sids.codes.shape == (120, 3) and sids.codebook_sizes[:2] == [4, 4]
    # level-1 code is a relabelling of the true cluster
    pairs = set(zip(labels.tolist(), sids.codes[:, 0].tolist()))
    assert len(pairs) == 4
    assert len(np.unique(sids.codes, axis=0)) == 120
    stats = sids.stats()
    assert stats["levels"][0]["codes_used"] == 1.0 and stats["levels"][0]["max_items_per_prefix"] == 30
    # the second level splits each cluster (16 prefixes for 120 items: all still collide, in smaller groups)
    assert stats["levels"][1]["max_items_per_prefix"] < 30 and stats["levels"][1]["codes_used"] == 1.0
    assert stats["max_items_per_code"] == stats["levels"][1]["max_items_per_prefix"]


def test_build_rejects_bad_embeddings():
    x, _ = clustered()
    x[6, 2] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        build_semantic_ids(x, codebook_size=4)
    with pytest.raises(ValueError, match="unknown semantic-ID method"):
        build_semantic_ids(clustered()[0], codebook_size=4, method="pq")


def test_save_load_round_trip_and_plot(tmp_path):
    x, _ = clustered()
    sids = build_semantic_ids(torch.as_tensor(x), num_levels=2, codebook_size=4)
    sids.save(tmp_path / "sids")
    again = SemanticIDs.load(tmp_path / "sids")
    assert np.array_equal(again.codes, sids.codes) and again.codebook_sizes == sids.codebook_sizes
    plot_code_usage(sids, tmp_path / "usage.png")
    assert (tmp_path / "usage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError, match="codes.npy"):
        SemanticIDs.load(tmp_path)


def test_concat_embeddings_balances_scales():
    text, cf = np.random.default_rng(0).normal(size=(50, 6)) * 100, np.random.default_rng(1).normal(size=(50, 3))
    both = concat_embeddings(text, cf)
    assert both.shape == (50, 9)
    assert np.isclose(np.linalg.norm(both[:, :6], axis=1).mean(), 1)
    assert np.isclose(np.linalg.norm(both[:, 6:], axis=1).mean(), 1)


def test_rqvae_trains_and_reports_usage():
    x, _ = clustered(num_clusters=8, per_cluster=20, dim=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sids = build_semantic_ids(x, num_levels=2, codebook_size=8, method="rqvae", epochs=30, batch_size=64)
    assert sids.method == "rqvae" and sids.codes.shape == (160, 3)
    info = sids.info
    assert len(info["codes_used"]) == 2 and all(0 < share <= 1 for share in info["codes_used"])
    assert info["codes_used"][0] == sids.stats()["levels"][0]["codes_used"]
    assert np.isfinite(info["reconstruction_mse"])


def test_rqvae_warns_when_a_level_collapses():
    x = np.repeat(np.random.default_rng(0).normal(size=(2, 8)), 40, axis=0)  # 2 distinct points, 16 codes
    with pytest.warns(UserWarning, match="collapsed"):
        build_semantic_ids(x, num_levels=1, codebook_size=16, method="rqvae", epochs=2,
                           shrink_for_small_catalogues=False)


# ---- code tokens ----------------------------------------------------------------------------------------------

def tiny_lm(vocab_size: int, arch: str = "llama", tie: bool = True):
    torch.manual_seed(0)
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    return model_cls(config_cls(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=256,
                                tie_word_embeddings=tie))


def small_sids():
    return SemanticIDs.with_collision_level(np.array([[0, 1], [2, 1], [2, 1], [3, 0]]), [4, 2])


def test_code_tokens_and_added_rows():
    sids = small_sids()
    assert code_tokens(sids)[2] == ["<a_2>", "<b_1>", "<c_1>"]
    tokenizer = tiny_tokenizer()
    model = tiny_lm(len(tokenizer))
    old = model.get_input_embeddings().weight.detach().clone()
    ids = add_code_tokens(tokenizer, model, sids)
    assert ids.shape == (4, 3) and len(tokenizer) == len(old) + 4 + 2 + 2
    assert tokenizer.convert_ids_to_tokens(ids[2].tolist()) == ["<a_2>", "<b_1>", "<c_1>"]
    weight = model.get_input_embeddings().weight
    assert torch.equal(weight[: len(old)], old) and torch.allclose(weight[len(old):], old.mean(0).expand(8, -1))
    # encoded as single tokens, and a second call changes nothing
    assert tokenizer("<a_2><b_1><c_1>")["input_ids"] == ids[2].tolist()
    assert torch.equal(add_code_tokens(tokenizer, model, sids), ids) and len(tokenizer) == len(old) + 8


@pytest.mark.parametrize("arch,tie", [("llama", True), ("qwen2", False)])
def test_trainable_code_rows_train_save_and_reload_exactly(tmp_path, arch, tie):
    sids = small_sids()
    tokenizer = tiny_tokenizer()
    model = tiny_lm(len(tokenizer), arch, tie)
    ids = add_code_tokens(tokenizer, model, sids)
    indices = trainable_token_indices(tokenizer, sids, model)
    assert isinstance(indices, list) == tie
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                  trainable_token_indices=indices))
    batch = torch.cat([torch.tensor([[5, 9, 17]]), ids[1:2]], dim=1)
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=1.0)
    before = peft_model(batch).logits.detach()
    loss = peft_model(batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    peft_model.eval()
    after = peft_model(batch).logits.detach()
    assert not torch.allclose(before, after)
    peft_model.save_pretrained(tmp_path / "adapter")
    # reload onto a freshly built base: same seed, same added rows
    tokenizer2 = tiny_tokenizer()
    base = tiny_lm(len(tokenizer2), arch, tie)
    add_code_tokens(tokenizer2, base, sids)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    assert torch.equal(reloaded(batch).logits, after)


def test_normalized_codes_ignore_each_items_embedding_norm():
    x, _ = clustered()
    scale = np.random.default_rng(3).uniform(0.01, 100, size=(len(x), 1))
    same = build_semantic_ids(x, num_levels=2, codebook_size=4, seed=0)
    scaled = build_semantic_ids(x * scale, num_levels=2, codebook_size=4, seed=0)
    assert np.array_equal(same.codes, scaled.codes)
    raw = build_semantic_ids(x * scale, num_levels=2, codebook_size=4, seed=0, normalize=False)
    assert not np.array_equal(raw.codes, scaled.codes)
