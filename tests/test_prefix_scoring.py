import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

from llmrec_ft.llm.collaborative_lm import CollaborativeLM
from llmrec_ft.llm.prefix_scoring import common_prefix_length, score_candidates, score_prompts
from llmrec_ft.llm.projector import CollaborativeProjector
from llmrec_ft.llm.tokens import CollaborativeTokenIds

VOCAB, USER, ITEM = 101, 99, 100
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=256)
CONFIGS = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}
YES_NO = [7, 11]


def tiny_lm(kind="llama"):
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(CONFIGS[kind](**TINY))
    lm = get_peft_model(lm, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0))
    for name, param in lm.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(param, std=0.05)
    return lm.eval()


def candidate_prompts(num=9, prefix_len=12, seed=0):
    """One user's prompts: a shared history prefix (user slot + 2 item slots), then a candidate-specific
    suffix of varying length holding the candidate's item slot."""
    g = torch.Generator().manual_seed(seed)
    words = lambda n: torch.randint(1, 90, (n,), generator=g).tolist()  # noqa: E731
    prefix = words(3) + [USER] + words(4) + [ITEM] + words(2) + [ITEM] + words(prefix_len - 12)
    prompts = []
    for c in range(num):
        prompts.append(prefix + [91 + c % 8] + words(c % 4) + [ITEM] + words(1 + c % 3))
    return prompts


def reference_logits(model, prompts, **cf):
    """One plain forward per prompt: the definition of the score."""
    rows = []
    for c, prompt in enumerate(prompts):
        inputs = {"input_ids": torch.tensor([prompt])}
        if cf:
            inputs.update(cf_history=torch.tensor([cf["history"]]), cf_items=torch.tensor([cf["items"][c]]))
        rows.append(model(**inputs, use_cache=False).logits[0, -1, YES_NO])
    return torch.stack(rows)


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # one token always stays in the suffix
    with pytest.raises(ValueError):
        common_prefix_length([[], [1]])


@pytest.mark.parametrize("kind", sorted(CONFIGS))
@pytest.mark.parametrize("shared_prefix", [True, False])
def test_plain_lm_scores_match_full_forwards(kind, shared_prefix):
    lm = tiny_lm(kind)
    prompts = candidate_prompts()
    with torch.no_grad():
        expected = reference_logits(lm, prompts)
    got = score_prompts(lm, prompts, YES_NO, chunk_size=4, shared_prefix=shared_prefix)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


class MeanCollab(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.item_embeddings = nn.Embedding(20, 8, padding_idx=0)

    def sequence_representation(self, ids):
        return self.item_embeddings(ids).sum(1)


def test_collaborative_lm_scores_match_full_forwards():
    lm = tiny_lm("qwen2")
    torch.manual_seed(2)
    model = CollaborativeLM(lm, CollaborativeProjector(8, 16, 64), MeanCollab(), CollaborativeTokenIds(USER, ITEM)).eval()
    prompts = candidate_prompts()
    history = [0, 4, 9]
    items = [[4, 9, 10 + c] for c in range(len(prompts))]
    with torch.no_grad():
        expected = reference_logits(model, prompts, history=history, items=items)
    got = score_prompts(model, prompts, YES_NO, cf_history=history, cf_items=items, chunk_size=5)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    # the candidate's own collaborative vector matters: swapping it changes that candidate's score only
    items[3][-1] = 19
    changed = score_prompts(model, prompts, YES_NO, cf_history=history, cf_items=items, chunk_size=5)
    assert not torch.allclose(changed[3], got[3]) and torch.allclose(changed[:3], got[:3])

    items[0][0] = 5  # a history slot that differs between prompts cannot be part of a shared prefix
    with pytest.raises(ValueError, match="shared prefix"):
        score_prompts(model, prompts, YES_NO, cf_history=history, cf_items=items)


def test_shape_errors():
    lm = tiny_lm()
    with pytest.raises(ValueError, match="at least one suffix token"):
        score_candidates(lm, torch.zeros(3, 64), torch.zeros(2, 4, 64), torch.tensor([2, 0]), YES_NO)
