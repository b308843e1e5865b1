"""Scoring: P(Yes) from the answer logits, AUC by warm/cold group, sampled-candidate ranking, SASRec baselines."""

from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch
from transformers import TrainingArguments

from llmrec_ft.collab.sasrec import SASRec, SASRecConfig
from llmrec_ft.data import DataConfig, build_dataset, num_items
from llmrec_ft.llm.prompts import load_prompt
from llmrec_ft.train.pointwise_data import PointwiseConfig, answer_token_ids, build_pointwise_samples, encode_pointwise
from llmrec_ft.train.collator import PointwiseCollator
from llmrec_ft.train.scoring import (SASRecClassifier, auc_report, float32_lm_head, longest_first, next_item_scores,
                                     ranking_candidates, ranking_report, sasrec_features, yes_logit_gaps, yes_no_report,
                                     yes_probabilities)
from llmrec_ft.train.tiny import save_tiny_backbone, tiny_collaborative_lm

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def ds():
    dataset, _ = build_dataset(DataConfig(dataset="ml-100k-grouplens", data_path=str(FIXTURES / "ml-100k")))
    return dataset


@pytest.fixture(scope="module")
def model_and_tokenizer(ds, tmp_path_factory):
    backbone = save_tiny_backbone(tmp_path_factory.mktemp("tiny") / "llama", "llama", hidden_size=32, num_layers=2)
    model, tokenizer = tiny_collaborative_lm(backbone, num_items(ds))
    torch.nn.init.normal_(model.lm.base_model.model.model.layers[0].self_attn.v_proj.lora_B["default"].weight)
    return model.eval(), tokenizer


def test_yes_probability_is_the_two_way_softmax_at_the_last_prompt_token(ds, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    samples = build_pointwise_samples(ds, PointwiseConfig(max_history=4))["train"].select(range(5))
    encoded = encode_pointwise(samples, tokenizer, load_prompt("yes_no"), ["", *ds["items"]["title"]], True, 4)
    yes, no = answer_token_ids(tokenizer)
    batched = yes_probabilities(model, encoded, tokenizer.pad_token_id, yes, no, collaborative=True, batch_size=5)
    with torch.no_grad():
        for i, row in enumerate(encoded):
            prompt = torch.tensor([row["input_ids"][:-1]])
            logits = model(input_ids=prompt, cf_history=torch.tensor([row["cf_history"]]),
                           cf_items=torch.tensor([row["cf_items"]])).logits[0, -1]
            expected = torch.softmax(logits[[yes, no]], dim=0)[0]
            torch.testing.assert_close(batched[i], expected, atol=1e-5, rtol=1e-4)
    one_by_one = yes_probabilities(model, encoded, tokenizer.pad_token_id, yes, no, collaborative=True, batch_size=1)
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=1e-4)  # padding does not change a score
    assert batched.std() > 0


def _dataset_order_gaps(model, encoded, pad_token_id, yes, no, batch_size):
    """The reference: batches cut in dataset order, as scoring did before it sorted by length."""
    collate = PointwiseCollator(pad_token_id, collaborative=True, padding_side="left", prompt_only=True)
    gaps = []
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            rows = encoded.select(range(start, min(start + batch_size, len(encoded)))).to_list()
            logits = model(**collate(rows), logits_to_keep=1).logits[:, -1].float()
            gaps.append(logits[:, yes] - logits[:, no])
    return torch.cat(gaps)


def test_length_sorted_scoring_equals_dataset_order_scoring(ds, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    samples = build_pointwise_samples(ds, PointwiseConfig(max_history=6, train_samples_per_user=3))["train"]
    encoded = encode_pointwise(samples, tokenizer, load_prompt("yes_no"), ["", *ds["items"]["title"]],
                               True, 6)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    order = longest_first(lengths)
    assert len(set(lengths)) > 3 and order != list(range(len(lengths)))  # the sort really reorders, and pads less
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)
    yes, no = answer_token_ids(tokenizer)
    reference = _dataset_order_gaps(model, encoded, tokenizer.pad_token_id, yes, no, batch_size=5)
    sorted_gaps = yes_logit_gaps(model, encoded, tokenizer.pad_token_id, yes, no, collaborative=True, batch_size=5)
    torch.testing.assert_close(sorted_gaps, reference, atol=1e-5, rtol=1e-5)
    assert reference.std() > 0


def test_answer_logits_are_float32_under_bf16_autocast(ds, model_and_tokenizer):
    """The decoder runs in bf16, the head in float32 on the very hidden state the decoder handed it."""
    model, tokenizer = model_and_tokenizer
    samples = build_pointwise_samples(ds, PointwiseConfig(max_history=4))["train"].select(range(6))
    encoded = encode_pointwise(samples, tokenizer, load_prompt("yes_no"), ["", *ds["items"]["title"]], True, 4)
    yes, no = answer_token_ids(tokenizer)
    head = model.lm.get_output_embeddings()
    captured = []
    capture = head.register_forward_hook(lambda module, args, logits: captured.append((args[0], logits)))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            gaps = yes_logit_gaps(model, encoded, tokenizer.pad_token_id, yes, no, collaborative=True, batch_size=1)
    finally:
        capture.remove()
    assert not head._forward_hooks  # the float32 hook is gone after scoring
    order = longest_first([len(ids) for ids in encoded["input_ids"]])
    hidden = torch.cat([hidden[:, -1] for hidden, _ in captured])
    bf16_logits = torch.cat([logits[:, -1] for _, logits in captured]).float()
    assert captured[0][1].dtype == torch.bfloat16  # what the head gave under autocast, before the hook
    answer_rows = head.weight[[yes, no]].double()
    expected = torch.empty(len(order))
    expected[order] = (hidden.double() @ answer_rows.T @ torch.tensor([1.0, -1.0], dtype=torch.double)).float()
    torch.testing.assert_close(gaps, expected, atol=1e-5, rtol=1e-5)
    bf16_gaps = torch.empty(len(order))
    bf16_gaps[order] = bf16_logits[:, yes] - bf16_logits[:, no]
    assert (bf16_gaps - expected).abs().max() > 1e-4  # a bf16 head would have rounded them


def test_float32_lm_head_leaves_float32_logits_untouched(ds, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    row = encode_pointwise(build_pointwise_samples(ds, PointwiseConfig(max_history=4))["train"].select(range(1)),
                           tokenizer, load_prompt("yes_no"), ["", *ds["items"]["title"]], True, 4)[0]
    inputs = {"input_ids": torch.tensor([row["input_ids"][:-1]]), "cf_history": torch.tensor([row["cf_history"]]),
              "cf_items": torch.tensor([row["cf_items"]])}
    with torch.no_grad():
        plain = model(**inputs, logits_to_keep=1).logits
        with float32_lm_head(model):
            hooked = model(**inputs, logits_to_keep=1).logits
    assert torch.equal(plain, hooked)
    with pytest.raises(TypeError, match="nn.Linear output embedding, got Identity"):
        with float32_lm_head(SimpleNamespace(get_output_embeddings=torch.nn.Identity)):
            pass


class _SumOfTokensModel(torch.nn.Module):
    """The Yes logit of a row is the sum of its (unpadded) token ids: a score that names the row it came from."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, position_ids, logits_to_keep):
        logits = torch.zeros(len(input_ids), 1, 4)
        logits[:, -1, 1] = (input_ids * attention_mask).sum(1).float()
        return SimpleNamespace(logits=logits)


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_scores_come_back_in_dataset_order(batch_size):
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, 50, (int(length),), generator=generator).tolist()
               for length in torch.randint(2, 12, (11,), generator=generator)]
    encoded = datasets.Dataset.from_dict({"input_ids": [prompt + [99] for prompt in prompts]})  # + answer token
    gaps = yes_logit_gaps(_SumOfTokensModel(), encoded, pad_token_id=0, yes_id=1, no_id=None, collaborative=False,
                          batch_size=batch_size)
    assert gaps.tolist() == [float(sum(prompt)) for prompt in prompts]
    empty = datasets.Dataset.from_dict({"input_ids": []})
    assert yes_logit_gaps(_SumOfTokensModel(), empty, 0, 1, None, False).shape == (0,)


def test_auc_report_by_group():
    groups = {"warm": datasets.Dataset.from_dict({"label": [0, 1, 0, 1]}),
              "cold": datasets.Dataset.from_dict({"label": [1, 0, 1]})}
    scores = {"warm": torch.tensor([0.1, 0.9, 0.2, 0.8]), "cold": torch.tensor([0.2, 0.9, 0.1])}
    report = auc_report(scores, groups)
    assert report["auc_warm"] == 1.0 and report["auc_cold"] == 0.0
    assert report["n_warm"] == 4 and report["n_cold"] == 3
    assert 0 < report["auc_all"] < 1
    one_class = {"cold": datasets.Dataset.from_dict({"label": [1]})}
    assert auc_report({"cold": torch.tensor([0.3])}, one_class)["auc_cold"] is None


def test_ranking_candidates_layout_and_metrics(ds):
    rows = ranking_candidates(ds, num_negatives=2, max_users=None, cf_max_len=3, max_history=2, seed=0)
    assert len(rows) == 3 * len(ds["test"])
    for user, start in zip(ds["test"], range(0, len(rows), 3)):
        target, *negatives = rows.select(range(start, start + 3))
        assert target["candidate"] == user["target"] and target["label"] == 1
        assert all(n["label"] == 0 and n["candidate"] not in user["history"] + [user["target"]] for n in negatives)
        assert target["cf_history"] == user["history"][-3:] and target["history"] == user["history"][-2:]
    perfect = torch.tensor(rows["label"], dtype=torch.float)
    assert ranking_report(perfect, 2, ks=(1,))["hr@1"] == 1.0
    assert ranking_report(-perfect, 2, ks=(1,))["hr@1"] == 0.0


def test_sasrec_baselines(ds):
    torch.manual_seed(0)
    sasrec = SASRec(SASRecConfig(num_items=num_items(ds), hidden_size=8, num_blocks=1, max_len=10, dropout=0.0))
    samples = build_pointwise_samples(ds, PointwiseConfig(cf_max_len=10, train_samples_per_user=100))["train"]
    user, item = sasrec_features(sasrec, samples)
    torch.testing.assert_close(next_item_scores(sasrec, samples), (user * item).sum(-1))
    # A label that is a linear function of the item embedding: the logistic head must recover it.
    direction = torch.randn(8)
    labelled = samples.remove_columns("label").add_column("label", ((item @ direction) > 0).long().tolist())
    predicted = SASRecClassifier(sasrec).fit(labelled).predict(labelled)
    assert ((predicted > 0).long() == torch.tensor(labelled["label"])).float().mean() > 0.9  # logits


def test_yes_no_report_scores_every_group_and_shows_progress_unless_disabled(ds, model_and_tokenizer, tmp_path, capsys):
    model, tokenizer = model_and_tokenizer
    samples = build_pointwise_samples(ds, PointwiseConfig(max_history=4))["train"]
    titles = ["", *ds["items"]["title"]]
    tests = {"warm": samples.select(range(6)), "cold": samples.select(range(6, 10))}
    encoded = {group: encode_pointwise(rows, tokenizer, load_prompt("yes_no"), titles, True, 4)
               for group, rows in tests.items()}
    ranking = encode_pointwise(ranking_candidates(ds, 2, 2, 10, 4), tokenizer, load_prompt("yes_no"), titles, True, 4)
    capsys.readouterr()
    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=3, disable_tqdm=False, use_cpu=True)
    report, scores = yes_no_report(model, tokenizer, encoded, ranking, True, 2, args)
    bars = capsys.readouterr().err
    assert "Scoring test warm" in bars and "Scoring test cold" in bars and "4/4" in bars
    assert "Scoring ranking candidates" in bars and "6/6" in bars
    yes, no = answer_token_ids(tokenizer)
    expected = {group: yes_logit_gaps(model, rows, tokenizer.pad_token_id, yes, no, True, batch_size=3)
                for group, rows in encoded.items()}
    torch.testing.assert_close(scores, torch.cat([expected["warm"], expected["cold"]]))
    by_group = auc_report(expected, encoded)
    assert {key: report[key] for key in by_group} == by_group
    assert set(report) == {*by_group, "hr@10", "ndcg@10", "mrr@10", "eval_seconds"}
    args = TrainingArguments(output_dir=str(tmp_path), disable_tqdm=True, use_cpu=True)
    assert yes_no_report(model, tokenizer, encoded, ranking.select(range(0)), True, 2, args)[0].keys().isdisjoint(
        {"hr@10"})  # no ranking rows: no ranking metrics
    assert "Scoring" not in capsys.readouterr().err
