"""HSTU backbone (llmrec_ft/collab/hstu.py) and the InfoNCE training loss (llmrec_ft/adapters/infonce.py)."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

from llmrec_ft.adapters import attach_adapter, build_adapter
from llmrec_ft.adapters.infonce import infonce_config, sampled_softmax_loss
from llmrec_ft.collab.hstu import HSTU, HSTUConfig
from llmrec_ft.collab.sasrec import SASRec, SASRecConfig

NUM_ITEMS = 20
SEQUENCES = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])


def hstu(**overrides):
    torch.manual_seed(0)
    config = dict(num_items=NUM_ITEMS, hidden_size=16, num_heads=2, max_len=8, dropout=0.0)
    model = HSTU(HSTUConfig(**{**config, **overrides})).eval()
    with torch.no_grad():  # non-zero relative bias, so the tests see it
        for block in model.blocks:
            block.relative_bias.normal_()
    return model


def test_extra_left_padding_changes_nothing():
    model = hstu()
    padded = torch.cat([torch.zeros(2, 2, dtype=torch.long), SEQUENCES], 1)
    torch.testing.assert_close(model.encode(padded)[:, 2:], model.encode(SEQUENCES), atol=1e-5, rtol=1e-5)
    assert model.encode(padded)[:, :2].abs().max() == 0
    torch.testing.assert_close(model.score_all_items(padded), model.score_all_items(SEQUENCES), atol=1e-5, rtol=1e-5)


def test_hstu_is_causal():
    model = hstu()
    changed = SEQUENCES.clone()
    changed[1, 4] = 9
    before, after = model.encode(SEQUENCES), model.encode(changed)
    torch.testing.assert_close(after[1, :4], before[1, :4])
    assert not torch.allclose(after[1, 4:], before[1, 4:])


def reference_block(block, x, allowed):
    """HSTU layer written out per head and per query position with explicit loops (the slow reference)."""
    heads, hidden = block.num_heads, x.shape[-1]
    d = hidden // heads
    uvqk = F.silu(block.uvqk(block.input_norm(x)))
    u, v, q, k = uvqk[..., :hidden], uvqk[..., hidden:2 * hidden], uvqk[..., 2 * hidden:3 * hidden], uvqk[..., 3 * hidden:]
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for i in range(x.shape[1]):
            parts = []
            for h in range(heads):
                s = slice(h * d, (h + 1) * d)
                acc = torch.zeros(d)
                for j in range(i + 1):
                    if allowed[b, i, j]:
                        score = q[b, i, s] @ k[b, j, s] / math.sqrt(d) + block.relative_bias[h, min(i - j, block.max_len - 1)]
                        acc = acc + F.silu(score) / block.max_len * v[b, j, s]
                parts.append(acc)
            out[b, i] = torch.cat(parts)
    return x + block.output(block.attention_norm(out) * u)


def test_block_matches_the_loop_reference():
    model = hstu()
    x = torch.randn(2, 6, 16)
    is_item = SEQUENCES.ne(0)
    allowed = torch.ones(6, 6, dtype=torch.bool).tril() & is_item[:, None, :] & is_item[:, :, None]
    with torch.no_grad():
        torch.testing.assert_close(model.blocks[0](x, allowed), reference_block(model.blocks[0], x, allowed),
                                   atol=1e-5, rtol=1e-5)


def test_save_load_adapter_and_training_step(tmp_path):
    model = hstu()
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded.score_all_items(SEQUENCES), model.score_all_items(SEQUENCES))
    attach_adapter(model, build_adapter("mlp", torch.randn(NUM_ITEMS, 24), 16, hidden_dim=8))
    model.train()
    labels = torch.cat([SEQUENCES[:, 1:], torch.tensor([[7], [8]])], 1) * SEQUENCES.ne(0)
    loss = model(SEQUENCES, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss) and model.item_embeddings.adapter is not None
    assert all(p.grad is not None for p in model.blocks.parameters() if p.requires_grad)


def test_sampled_softmax_with_every_item_as_negative_is_the_full_cross_entropy():
    torch.manual_seed(0)
    table = torch.nn.Embedding(NUM_ITEMS + 1, 8)
    states, targets = torch.randn(5, 8), torch.tensor([1, 4, 9, 20, 3])
    everything = torch.arange(1, NUM_ITEMS + 1).repeat(5, 1)  # the positive among them is masked out
    got = sampled_softmax_loss(states, targets, table, NUM_ITEMS, NUM_ITEMS, 1.0, negatives=everything)
    logits = states @ table.weight[1:].T
    torch.testing.assert_close(got, F.cross_entropy(logits, targets - 1))
    hot = sampled_softmax_loss(states, targets, table, NUM_ITEMS, NUM_ITEMS, 0.5, negatives=everything)
    torch.testing.assert_close(hot, F.cross_entropy(logits / 0.5, targets - 1))


def test_infonce_switches_the_backbone_loss_in_training_only():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(num_items=NUM_ITEMS, hidden_size=16, max_len=8, dropout=0.0,
                                **infonce_config(num_negatives=4, temperature=0.2)))
    labels = torch.cat([SEQUENCES[:, 1:], torch.tensor([[7], [8]])], 1) * SEQUENCES.ne(0)
    model.eval()
    full = model(SEQUENCES, labels=labels).loss
    hidden = model.encode(SEQUENCES)
    keep = labels.ne(0)
    torch.testing.assert_close(full, F.cross_entropy(model.item_logits(hidden[keep]), labels[keep]))
    model.train()
    torch.manual_seed(1)
    sampled = model(SEQUENCES, labels=labels).loss
    assert torch.isfinite(sampled) and not torch.allclose(sampled, full)
    with pytest.raises(ValueError, match="temperature > 0"):
        infonce_config(4, 0.0)
