"""``Recommender`` on SASRec folders (fast): top-K equals the full-catalogue ranking, history excluded, raw-id
errors; the generative path is covered end to end in test_recipe_generative.py."""

import pytest
import torch

from llmrec_ft.collab.sasrec import SASRec, SASRecConfig
from llmrec_ft.recommender import Recommender, UnknownItemError


@pytest.fixture
def sasrec_dir(tmp_path):
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(num_items=20, hidden_size=16, num_blocks=1, max_len=10))
    model.save_pretrained(tmp_path / "sasrec")
    return tmp_path / "sasrec", model.eval()


def test_sasrec_top_k_is_the_full_ranking_and_reloads_identically(sasrec_dir):
    path, model = sasrec_dir
    recommender = Recommender.from_pretrained(path, "cpu")
    histories = [["3", "5", "7"], ["1"]]
    items, scores = recommender.recommend(histories, k=5)
    with torch.no_grad():
        full = model.score_all_items(torch.tensor([[3, 5, 7], [0, 0, 1]]))
    for row, history in enumerate(histories):
        ranked = [i for i in full[row].argsort(descending=True).tolist() if i != 0 and str(i) not in history]
        assert items[row] == [str(i) for i in ranked[:5]]
        assert scores[row] == pytest.approx(full[row, ranked[:5]].tolist())
    assert Recommender.from_pretrained(path, "cpu").recommend(histories, k=5) == (items, scores)
    with_history, _ = recommender.recommend(histories, k=20, exclude_history=False)
    assert len(with_history[0]) == 20


def test_unknown_item_names_history_and_position(sasrec_dir):
    recommender = Recommender.from_pretrained(sasrec_dir[0], "cpu")
    with pytest.raises(UnknownItemError, match=r"history 1, position 0: unknown item id '21'"):
        recommender.recommend([["1"], ["21"]])


@pytest.mark.parametrize("loss", ["yes_no_ce", "yes_bce"])
def test_sasrecllm_artifacts_rank_every_item_by_yes_minus_no(tmp_path, loss):
    """A SASRecLLM artifact folder (tiny random backbone): every catalogue item is a Yes/No candidate; the top-K
    equals ranking the full (non-shared-prefix) forwards of every candidate prompt by the score the run trained
    (Yes - No, or the Yes logit alone for ``loss: yes_bce``)."""
    from llmrec_ft import hub
    from llmrec_ft.data import DataConfig, num_items, prepare_dataset
    from llmrec_ft.llm.prefix_scoring import score_prompts
    from llmrec_ft.llm.prompts import encode_prompt, load_prompt
    from llmrec_ft.train.pointwise_data import answer_token_ids
    from llmrec_ft.train.tiny import save_tiny_backbone, tiny_collaborative_lm

    ds = prepare_dataset(DataConfig(dataset="ml-100k"))
    backbone = save_tiny_backbone(tmp_path / "tiny", hidden_size=32)
    model, tokenizer = tiny_collaborative_lm(backbone, num_items(ds))
    model.save_pretrained(tmp_path / "trained")
    config = {"model_name_or_path": str(backbone), "dataset": "ml-100k", "max_history": 3, "cf_max_len": 50,
              "cf_tokens_per_slot": 1, "loss": loss}
    hub.save_artifacts(tmp_path / "artifacts", tmp_path / "trained", tokenizer, config, {})
    recommender = Recommender.from_pretrained(tmp_path / "artifacts", "cpu")
    assert recommender.kind == "sasrecllm"
    raw = ds["items"]["raw_item_id"]
    history = [5, 17, 300]
    items, scores = recommender.recommend([[raw[i - 1] for i in history]], k=5, batch_size=128)

    titles, template = ds["items"]["title"], load_prompt("yes_no")
    prompts, slots = [], []
    for candidate in range(1, num_items(ds) + 1):
        prompt = template.render(tokenizer, [titles[i - 1] for i in history], [True] * 3, titles[candidate - 1],
                                 max_history=3)
        prompts.append(encode_prompt(tokenizer, prompt.text))
        slots.append(prompt.cf_item_ids(history, candidate))
    model.eval()
    logits = score_prompts(model, prompts, answer_token_ids(tokenizer), cf_history=history, cf_items=slots,
                           chunk_size=256, shared_prefix=False)
    reference = (logits[:, 0] if loss == "yes_bce" else logits[:, 0] - logits[:, 1]).float()
    reference[[i - 1 for i in history]] = float("-inf")
    top = reference.topk(5)
    assert scores[0] == pytest.approx(top.values.tolist(), abs=1e-4)
    assert items[0][:3] == [raw[i] for i in top.indices.tolist()][:3]
