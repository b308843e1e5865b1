"""CatalogTrie against a brute-force set of prefixes, its errors, exclusions, and the logits processor."""

import numpy as np
import pytest
import torch

from llmrec_ft.generative.trie import CatalogConstraintLogitsProcessor, CatalogTrie

VOCAB = 40


def pad(rows, width=None):
    width = width or max(len(r) for r in rows)
    out = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row)
    return out


def random_titles(seed=0, num_items=60, eos=39):
    """Variable-length 'titles' over a small alphabet (many shared prefixes), each ending in eos; distinct."""
    rng = np.random.default_rng(seed)
    titles = set()
    while len(titles) < num_items:
        titles.add(tuple(rng.integers(1, 5, size=rng.integers(1, 5)).tolist()) + (eos,))
    return sorted(titles, key=lambda t: rng.random())


def brute_allowed(items, prefix, excluded=()):
    return {item[len(prefix)] for i, item in enumerate(items)
            if i not in excluded and len(item) > len(prefix) and tuple(item[: len(prefix)]) == tuple(prefix)}


def test_allowed_tokens_match_brute_force_on_every_prefix_with_and_without_exclusions():
    items = random_titles()
    trie = CatalogTrie(pad(items), VOCAB)
    excluded = [set(), {0, 5, 7, 11, 30}]
    remaining = trie.remaining_counts([sorted(e) for e in excluded], 2)
    prefixes = {tuple(item[:t]) for item in items for t in range(len(item) + 1)} | {(4, 4, 4, 4, 4), (0,)}
    for prefix in sorted(prefixes):
        generated = torch.tensor([prefix, prefix], dtype=torch.long).view(2, len(prefix))
        mask = trie.allowed_tokens(generated, remaining, torch.tensor([0, 1]))
        for user in range(2):
            expected = brute_allowed(items, prefix, excluded[user])
            # a prefix all of whose items are excluded is itself unreachable; its children then need not be listed
            if user == 1 and not any(tuple(items[i][: len(prefix)]) == prefix for i in range(len(items))
                                     if i not in excluded[1]):
                continue
            assert set(mask[user].nonzero().flatten().tolist()) == expected, (prefix, user)


def test_items_of_and_walk():
    items = random_titles(1)
    trie = CatalogTrie(pad(items), VOCAB)
    assert trie.items_of(pad(items, trie.max_len).clamp(min=0)).tolist() == list(range(len(items)))
    assert trie.items_of(pad([items[3][:-1], [0, 1]]).clamp(min=0)).tolist() == [-1, -1]


def test_semantic_id_trie_counts_and_widths():
    codes = torch.tensor([[10, 20, 30], [10, 20, 31], [10, 21, 30], [11, 20, 30]])
    trie = CatalogTrie(codes, VOCAB)
    assert trie.num_nodes == 1 + 2 + 3 + 4 and trie.max_children == [2, 2, 2, 0]
    assert trie.item_count[0] == 4 and trie.item_count[trie.walk(torch.tensor([[10]]))].item() == 3


@pytest.mark.parametrize("rows,message", [
    ([[1, 2, 3], [1, 2, 3]], "same token sequence"),
    ([[1, 2, -1], [1, 2, 3]], "proper prefix"),
    ([[1, 2, 50]], "vocab_size"),
    ([[1, -1, 3]], "-1 before a token"),
    ([[-1, -1]], "empty"),
])
def test_bad_catalogues_are_rejected_naming_the_row(rows, message):
    with pytest.raises(ValueError, match=message):
        CatalogTrie(torch.tensor(rows), VOCAB)
    with pytest.raises(ValueError, match="row"):
        CatalogTrie(torch.tensor(rows), VOCAB)


def test_excluding_every_item_under_a_prefix_closes_the_prefix():
    codes = torch.tensor([[1, 5], [1, 6], [2, 5]])
    trie = CatalogTrie(codes, VOCAB)
    remaining = trie.remaining_counts([[0, 1]], 1)
    mask = trie.allowed_tokens(torch.zeros(1, 0, dtype=torch.long), remaining, torch.tensor([0]))
    assert mask[0].nonzero().flatten().tolist() == [2]
    with pytest.raises(ValueError, match="outside the catalogue"):
        trie.remaining_counts([[3]], 1)


def test_random_walks_under_random_logits_always_end_on_a_catalogue_item():
    """Greedy decoding of random scores through the processor: every finished sequence is a real item."""
    items = random_titles(2, num_items=80)
    trie = CatalogTrie(pad(items), VOCAB)
    generator = torch.Generator().manual_seed(0)
    rows, prompt = 64, torch.randint(0, VOCAB, (64, 3), generator=generator)
    excluded = [[int(i) for i in torch.randint(0, 80, (10,), generator=generator)] for _ in range(rows)]
    processor = CatalogConstraintLogitsProcessor(trie, prompt_length=3, num_beams=1, exclude_items=excluded)
    sequences = prompt
    for _ in range(trie.max_len):
        scores = processor(sequences, torch.randn(rows, VOCAB, generator=generator) * 5)
        finished = trie.items_of(sequences[:, 3:]) >= 0
        next_token = torch.where(finished, 0, scores.argmax(dim=1))
        assert (torch.isfinite(scores.max(dim=1).values) | finished).all()  # an open beam always has a way on
        sequences = torch.cat([sequences, next_token[:, None]], dim=1)
    found = trie.items_of(sequences[:, 3:])
    assert (found >= 0).all()
    assert all(int(found[r]) not in excluded[r] for r in range(rows))


def test_processor_maps_beam_rows_to_their_prompt_and_pads_a_larger_model_vocabulary():
    codes = torch.tensor([[1, 5], [1, 6], [2, 5]])
    trie = CatalogTrie(codes, VOCAB)
    processor = CatalogConstraintLogitsProcessor(trie, prompt_length=2, num_beams=2, exclude_items=[[], [0]])
    input_ids = torch.tensor([[7, 7, 1], [7, 7, 2], [7, 7, 1], [7, 7, 2]])
    out = processor(input_ids, torch.zeros(4, VOCAB + 8))
    allowed = [set(torch.isfinite(r).nonzero().flatten().tolist()) for r in out]
    assert allowed == [{5, 6}, {5}, {6}, {5}]
