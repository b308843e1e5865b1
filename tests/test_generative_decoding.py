"""Constrained beam search: exact against brute force, fast path == transformers generate path, exclusions,
left padding, inputs_embeds, titles of different lengths. Tiny random Llama / Qwen2 in fp32 on CPU.

The compiled decode steps (``compile_decode``) run here with torch.compile's ``eager`` backend: dynamo traces the
decode forward over the static cache as on a GPU (fixed shapes, ``fullgraph=True`` so a graph break fails), but
without inductor, whose C++ compilation takes about a minute even for a tiny model on a 2-core CPU; inductor's
kernels and CUDA graphs are exercised by benchmarks/generative_decoding.py on a GPU."""

from functools import partial

import numpy as np
import pytest
import torch
from transformers import CompileConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from llmrec_ft.generative import decoding
from llmrec_ft.generative.decoding import constrained_beam_search, hf_generate_beam_search
from llmrec_ft.generative.semantic_ids import SemanticIDs
from llmrec_ft.generative.trie import CatalogTrie

VOCAB, EOS, CODE_BASE = 80, 1, 40  # code tokens live in [40, 80)
ARCHS = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
EAGER_COMPILE = CompileConfig(backend="eager", mode="default", fullgraph=True, dynamic=False)
SEARCHES = {"tree": partial(constrained_beam_search, kv_sharing="tree"),
            "expand": partial(constrained_beam_search, kv_sharing="expand"),
            "compiled": partial(constrained_beam_search, compile_decode=EAGER_COMPILE), "hf": hf_generate_beam_search}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles from scratch: dynamo's per-function recompile limit would otherwise be shared."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def tiny_lm(arch="llama", seed=0):
    torch.manual_seed(seed)
    config_cls, model_cls = ARCHS[arch]
    # a large init spread makes the next-token distributions peaked, so no two items tie by accident
    config = config_cls(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=256, initializer_range=0.3,
                        pad_token_id=0, eos_token_id=EOS, bos_token_id=2)
    return model_cls(config).eval()


def sid_catalogue(num_items=30, seed=0):
    """Semantic IDs with 2 levels of 4 codes + the collision level, as token ids (level l, code c -> distinct id)."""
    rng = np.random.default_rng(seed)
    sids = SemanticIDs.with_collision_level(rng.integers(0, 4, size=(num_items, 2)), [4, 4])
    offsets = np.cumsum([0] + sids.codebook_sizes[:-1]) + CODE_BASE
    return torch.as_tensor(sids.codes + offsets)


def title_catalogue(num_items=25, seed=0):
    """Titles over tokens 3..6 of 1-4 tokens + eos; some titles are prefixes of others."""
    rng = np.random.default_rng(seed)
    titles = set()
    while len(titles) < num_items:
        titles.add(tuple(rng.integers(3, 7, size=rng.integers(1, 5)).tolist()))
    titles = sorted(titles)
    assert any(a != b and b[: len(a)] == a for a in titles for b in titles)  # the case that needs eos
    out = torch.full((num_items, 5), -1)
    for i, title in enumerate(titles):
        out[i, : len(title) + 1] = torch.tensor(title + (EOS,))
    return out


def prompts(lengths, seed=0):
    """Left-padded random prompts [B, max(lengths)] and their attention mask."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, width - length:] = torch.randint(3, CODE_BASE, (length,), generator=generator)
        mask[row, width - length:] = 1
    return ids, mask


@torch.no_grad()
def brute_force(model, prompt, items):
    """Sequence log-probability of every item after an unpadded ``prompt`` [P], by teacher forcing."""
    scores = []
    for row in items:
        tokens = row[row >= 0]
        full = torch.cat([prompt, tokens])[None]
        logprobs = torch.log_softmax(model(full).logits[0].float(), dim=-1)
        positions = torch.arange(len(prompt) - 1, len(full[0]) - 1)
        scores.append(logprobs[positions, tokens].sum())
    return torch.stack(scores)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("catalogue", ["sid", "title"])
@pytest.mark.parametrize("search", ["tree", "expand", "hf"])  # compiled == expand: the test below
def test_full_width_beam_search_is_the_brute_force_ranking(arch, catalogue, search):
    model = tiny_lm(arch)
    items = sid_catalogue() if catalogue == "sid" else title_catalogue()
    trie = CatalogTrie(items, VOCAB)
    ids, mask = prompts([7, 4])
    found, scores = SEARCHES[search](model, trie, ids, mask, num_beams=len(items), top_k=len(items))
    for user in range(2):
        expected = brute_force(model, ids[user][mask[user] == 1], items)
        order = torch.argsort(expected, descending=True)
        assert found[user].tolist() == order.tolist()
        torch.testing.assert_close(scores[user], expected[order], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("catalogue", ["sid", "title"])
@pytest.mark.parametrize("kv_sharing", ["tree", "expand"])
def test_fast_path_equals_generate_with_exclusions(arch, catalogue, kv_sharing):
    model = tiny_lm(arch, seed=1)
    items = sid_catalogue(60, seed=1) if catalogue == "sid" else title_catalogue(seed=1)
    trie = CatalogTrie(items, VOCAB)
    ids, mask = prompts([9, 5, 12, 3], seed=1)
    excluded = [[0, 1, 2], [], [5, 9, 17, 3], list(range(0, len(items), 2))]
    fast = constrained_beam_search(model, trie, ids, mask, num_beams=6, top_k=5, exclude_items=excluded,
                                   kv_sharing=kv_sharing)
    reference = hf_generate_beam_search(model, trie, ids, mask, num_beams=6, top_k=5, exclude_items=excluded)
    assert torch.equal(fast[0], reference[0])
    torch.testing.assert_close(fast[1], reference[1], atol=1e-4, rtol=1e-5)
    for user, row in enumerate(fast[0].tolist()):
        assert len(set(row)) == 5 and all(0 <= item < len(items) for item in row)
        assert not set(row) & set(excluded[user])


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("catalogue", ["sid", "title"])
def test_compiled_static_decode_equals_eager_and_generate(arch, catalogue):
    """Static cache + compiled decode == eager fast path == generate, with a padded last batch (5 users, 2 per
    batch), finished users dropped (titles), exclusions and prompts of different lengths."""
    model = tiny_lm(arch, seed=4)
    items = sid_catalogue(60, seed=4) if catalogue == "sid" else title_catalogue(seed=4)
    trie = CatalogTrie(items, VOCAB)
    ids, mask = prompts([9, 5, 12, 3, 7], seed=4)
    excluded = [[0, 1, 2], [], [5, 9, 17, 3], list(range(0, len(items), 2)), [4]]
    search = dict(num_beams=6, top_k=5, exclude_items=excluded)
    compiled = constrained_beam_search(model, trie, ids, mask, users_per_batch=2, compile_decode=EAGER_COMPILE,
                                       **search)
    eager = constrained_beam_search(model, trie, ids, mask, users_per_batch=2, kv_sharing="expand", **search)
    reference = hf_generate_beam_search(model, trie, ids, mask, **search)
    for other in (eager, reference):
        assert torch.equal(compiled[0], other[0])
        torch.testing.assert_close(compiled[1], other[1], atol=1e-5, rtol=0)


def test_compiled_decode_compiles_once_per_shape():
    """The decode graph's shapes repeat across steps, batches and calls: one compilation for the same beam rows and
    prompt bucket (and the same static cache object); a new beam width compiles again."""
    graphs = []

    def counting_backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    config = CompileConfig(backend=counting_backend, mode="default", fullgraph=True, dynamic=False)
    model, trie = tiny_lm(), CatalogTrie(sid_catalogue(), VOCAB)
    caches = []
    for lengths in ([4, 6, 3], [9, 2], [7, 8, 1, 5]):  # prompt widths 6, 9, 8: one bucket; last batches padded
        ids, mask = prompts(lengths)
        constrained_beam_search(model, trie, ids, mask, num_beams=4, top_k=3, users_per_batch=2,
                                compile_decode=config)
        caches.append(decoding._STATIC_CACHES[model][1])
    assert len(graphs) == 1 and caches[0] is caches[1] is caches[2]
    constrained_beam_search(model, trie, ids, mask, num_beams=5, top_k=3, users_per_batch=2, compile_decode=config)
    assert len(graphs) == 2
    decoding.release_static_cache(model)
    assert model not in decoding._STATIC_CACHES


@pytest.mark.parametrize("search", ["tree", "expand", "compiled", "hf"])
def test_exclusions_and_fewer_items_than_top_k(search):
    model = tiny_lm()
    items = sid_catalogue(12)
    trie = CatalogTrie(items, VOCAB)
    ids, mask = prompts([6])
    excluded = [list(range(9))]  # 3 items left, top_k 5
    found, scores = SEARCHES[search](model, trie, ids, mask, num_beams=8, top_k=5, exclude_items=excluded)
    assert sorted(found[0, :3].tolist()) == [9, 10, 11] and found[0, 3:].tolist() == [-1, -1]
    assert torch.isfinite(scores[0, :3]).all() and torch.isinf(scores[0, 3:]).all()


def test_left_padded_batch_equals_one_prompt_at_a_time():
    model = tiny_lm("qwen2", seed=2)
    trie = CatalogTrie(title_catalogue(seed=2), VOCAB)
    ids, mask = prompts([11, 3, 7, 1], seed=2)
    batched = constrained_beam_search(model, trie, ids, mask, num_beams=5, top_k=4)
    for user in range(4):
        row = ids[user][mask[user] == 1][None]
        single = constrained_beam_search(model, trie, row, num_beams=5, top_k=4)
        assert torch.equal(single[0][0], batched[0][user])
        torch.testing.assert_close(single[1][0], batched[1][user], atol=1e-4, rtol=1e-5)
    # users_per_batch and dropping finished users change the schedule, not the result
    for kwargs in ({"users_per_batch": 3}, {"drop_finished_users": False}, {"kv_sharing": "tree"},
                   {"kv_sharing": "tree", "drop_finished_users": False}):
        again = constrained_beam_search(model, trie, ids, mask, num_beams=5, top_k=4, **kwargs)
        assert torch.equal(again[0], batched[0])


@pytest.mark.parametrize("search", ["tree", "expand", "compiled", "hf"])
def test_inputs_embeds_prompts_give_the_same_result_as_ids(search):
    model = tiny_lm(seed=3)
    trie = CatalogTrie(sid_catalogue(40, seed=3), VOCAB)
    ids, mask = prompts([8, 5], seed=3)
    from_ids = SEARCHES[search](model, trie, ids, mask, num_beams=6, top_k=3)
    embeds = model.get_input_embeddings()(ids)
    from_embeds = SEARCHES[search](model, trie, inputs_embeds=embeds, attention_mask=mask, num_beams=6, top_k=3)
    assert torch.equal(from_ids[0], from_embeds[0])
    torch.testing.assert_close(from_ids[1], from_embeds[1], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_random_models_only_ever_return_distinct_catalogue_items(seed):
    model = tiny_lm(seed=10 + seed)
    items = title_catalogue(20, seed=seed)
    trie = CatalogTrie(items, VOCAB)
    ids, mask = prompts([5, 9, 2, 6], seed=seed)
    generator = torch.Generator().manual_seed(seed)
    excluded = [torch.randint(0, 20, (6,), generator=generator).tolist() for _ in range(4)]
    found, scores = constrained_beam_search(model, trie, ids, mask, num_beams=10, top_k=10, exclude_items=excluded)
    for user in range(4):
        row = [i for i in found[user].tolist() if i >= 0]
        assert len(row) == len(set(row)) == min(10, 20 - len(set(excluded[user])))
        assert not set(row) & set(excluded[user])
        assert torch.all(scores[user, : len(row)][:-1] >= scores[user, : len(row)][1:])


def test_auto_kv_sharing_expands_the_cache(monkeypatch):
    """``"auto"`` is ``"expand"`` (2.4x faster than ``"tree"`` on an H200); ``"tree"`` only when asked for."""
    import llmrec_ft.generative.decoding as decoding

    model, trie = tiny_lm(), CatalogTrie(sid_catalogue(), VOCAB)
    ids, mask = prompts([4, 6])
    tree_steps = []
    real_mask = decoding._tree_attention_mask
    monkeypatch.setattr(decoding, "_tree_attention_mask", lambda *a: tree_steps.append(1) or real_mask(*a))
    auto = constrained_beam_search(model, trie, ids, mask, num_beams=4, top_k=3)
    assert not tree_steps
    tree = constrained_beam_search(model, trie, ids, mask, num_beams=4, top_k=3, kv_sharing="tree")
    assert tree_steps and torch.equal(auto[0], tree[0])


def test_tree_needs_an_attention_that_takes_a_custom_mask():
    model, trie = tiny_lm(), CatalogTrie(sid_catalogue(), VOCAB)
    ids, mask = prompts([4, 6])
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="flash_attention_2"):
        constrained_beam_search(model, trie, ids, mask, num_beams=4, top_k=3, kv_sharing="tree")


def test_bad_arguments_are_rejected():
    model, trie = tiny_lm(), CatalogTrie(sid_catalogue(), VOCAB)
    ids, mask = prompts([4, 6])
    with pytest.raises(ValueError, match="exactly one"):
        constrained_beam_search(model, trie)
    with pytest.raises(ValueError, match="left-padded"):
        constrained_beam_search(model, trie, ids, mask.flip(1))
    with pytest.raises(ValueError, match="top_k"):
        constrained_beam_search(model, trie, ids, mask, num_beams=4, top_k=5)
    with pytest.raises(ValueError, match="kv_sharing"):
        constrained_beam_search(model, trie, ids, mask, kv_sharing="paged")
    with pytest.raises(ValueError, match="compile_decode"):
        constrained_beam_search(model, trie, ids, mask, num_beams=4, top_k=3, kv_sharing="tree",
                                compile_decode=True)
    with pytest.raises(ValueError, match="2 prompts"):
        constrained_beam_search(model, trie, ids, mask, exclude_items=[[1]])
