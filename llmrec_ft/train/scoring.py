"""Scoring the Yes/No recommender: P(Yes) AUC on warm/cold test sets and sampled-candidate ranking.

P(Yes) is TALLRec's score: at the last prompt position, a softmax over just the two answer logits,
``sigmoid(logit_yes - logit_no)``; a model trained with ``loss: yes_bce`` (CoLLM) is scored as it was
trained, ``sigmoid(logit_yes)`` (``no_id=None``). Rankings and AUC use the log-odds itself, ``logit_yes -
logit_no`` or ``logit_yes`` (:func:`yes_logit_gaps`): sigmoid is monotone, so the order is the same, but a float32
sigmoid rounds every log-odds above ~17 to exactly 1.0 (float64: above ~37), and a fine-tuned model's confident
answers then all tie -- a perfectly ranked test set would score AUC 0.5 (a model trained with BCE on the raw Yes
logit starts around 20-30 there). :func:`yes_probabilities` is for reading P(Yes), not for ranking.
Only the last position's logits are computed (``logits_to_keep=1`` on a left-padded batch), so scoring never
materialises a ``[batch, length, vocab]`` tensor. Samples are scored longest first and the scores put back in
dataset order: a batch of near-equal lengths carries almost no padding (on the default MovieLens-100K prompts,
9-11% of the tokens of a dataset-order batch of 16 are padding; sorted, about 1%). Every row gets its own positions
and attention mask, so its score does not depend on which rows share its batch (up to float rounding).

The answer logits are computed in float32 even under bf16 autocast (:func:`float32_lm_head`): the score is a
small difference of two large logits, and a bf16 LM head rounds each of them. On the default MovieLens-100K run
(SmolLM2-135M, bf16 autocast, 200 warm test prompts) a bf16 head moved the log-odds by 0.085 on average against
a float32 forward (scores spread with standard deviation 0.41) and lowered AUC from 0.769 to 0.751; with the head
in float32 and the decoder still in bf16 the mean difference is 0.020 and AUC 0.774.

The collaborative baseline (SASRec alone) gets two scores, both from the pretrained checkpoint:

* ``next_item``: SASRec's own next-item logit ``<user, item>`` -- what SASRec was trained for;
* ``classifier``: a logistic regression on frozen SASRec features ``[u * e, u, e]`` fitted on the same
  Yes/No train samples as the LLM (CoLLM-style CF baselines are trained on the binary labels; this is the
  cheapest faithful version). Cold items have barely-trained embeddings, which is where SASRec is expected
  to fail.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping

import datasets
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, TrainingArguments

from llmrec_ft.eval import candidate_metrics, roc_auc, sample_negatives, user_auc
from llmrec_ft.eval.auc import auc_difference, auc_standard_error
from llmrec_ft.llm.packing import padded_batch_attention
from llmrec_ft.train.collator import PointwiseCollator, pad
from llmrec_ft.train.pointwise_data import answer_token_ids


def _batches(dataset: datasets.Dataset, batch_size: int):
    for start in range(0, len(dataset), batch_size):
        yield dataset.select(range(start, min(start + batch_size, len(dataset)))).to_list()


def longest_first(lengths: list[int]) -> list[int]:
    """Indices that order ``lengths`` from longest to shortest (ties keep dataset order): batches cut from this
    order hold prompts of near-equal length, and the longest batch, the memory peak, comes first."""
    return sorted(range(len(lengths)), key=lambda index: -lengths[index])


@contextlib.contextmanager
def float32_lm_head(model: nn.Module):
    """While open, the LM head of ``model`` (an HF causal LM, PEFT-wrapped or not, or a wrapper holding one as
    ``.lm``) returns float32 logits, recomputed from its input in float32 whenever it produced lower precision
    ones (bf16/fp16 autocast, or half-precision weights); float32 logits pass through untouched. A forward hook on
    ``get_output_embeddings()``: the decoder keeps its precision and speed, only the ``[B, 1, H] x [H, V]``
    head runs twice. A model without output embeddings (``get_output_embeddings`` absent or None) is left as
    it is; heads other than ``nn.Linear`` (every HF causal LM's ``lm_head`` is one) raise ``TypeError``."""
    lm = getattr(model, "lm", model)
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if head is None:
        yield
        return
    if type(head) is not nn.Linear:
        raise TypeError(f"float32_lm_head needs an nn.Linear output embedding, got {type(head).__name__}")

    def in_float32(module: nn.Linear, args, logits: torch.Tensor):
        if logits.dtype == torch.float32:
            return None
        with torch.autocast(logits.device.type, enabled=False):
            bias = None if module.bias is None else module.bias.float()
            return nn.functional.linear(args[0].float(), module.weight.float(), bias)

    handle = head.register_forward_hook(in_float32)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def yes_logit_gaps(model: nn.Module, encoded: datasets.Dataset, pad_token_id: int, yes_id: int, no_id: int | None,
                   collaborative: bool, batch_size: int = 16, progress: str | None = None) -> torch.Tensor:
    """``[N]`` float32 log-odds of P(Yes) for every encoded sample, in dataset order (its answer token is dropped,
    the prompt is scored): ``logit_yes - logit_no``, or ``logit_yes`` alone when ``no_id`` is None (``loss:
    yes_bce``). The score to rank by and compute AUC from: it never saturates. Batches of ``batch_size`` are
    cut from the samples sorted by length (:func:`longest_first`), so they carry little left padding; the answer
    logits are float32 whatever the autocast (:func:`float32_lm_head`). ``progress``: label of a tqdm bar over
    the samples (None: no bar); scoring thousands of prompts on a CPU takes minutes."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    collate = PointwiseCollator(pad_token_id, collaborative=collaborative, padding_side="left", prompt_only=True)
    order = longest_first([len(ids) for ids in encoded["input_ids"]]) if len(encoded) else []
    scores = torch.empty(len(order))
    try:
        with float32_lm_head(model), \
                tqdm(total=len(order), desc=progress, unit="prompt", disable=progress is None) as bar:
            for start in range(0, len(order), batch_size):
                indices = order[start:start + batch_size]
                batch = {key: value.to(device) for key, value in collate(encoded.select(indices).to_list()).items()}
                logits = model(**batch, logits_to_keep=1).logits[:, -1].float()
                scores[indices] = (logits[:, yes_id] - (logits[:, no_id] if no_id is not None else 0)).cpu()
                bar.update(len(indices))
    finally:
        model.train(was_training)
    return scores


def yes_no_report(model: nn.Module, tokenizer: PreTrainedTokenizerBase, encoded_tests: Mapping[str, datasets.Dataset],
                  encoded_ranking: datasets.Dataset, collaborative: bool, num_negatives: int,
                  training_args: TrainingArguments) -> tuple[dict, torch.Tensor]:
    """A trained Yes/No model's row of the results: :func:`auc_report` over ``encoded_tests`` (e.g. warm and
    cold), HR/NDCG@10 over ``encoded_ranking`` (:func:`ranking_candidates` rows; skipped when empty) and
    ``eval_seconds``; also the test scores ``[N]``, the groups concatenated in order (for :func:`paired_auc_gaps`).

    Scored the way ``Trainer.evaluate`` runs: ``per_device_eval_batch_size`` prompts a batch, under the training's
    bf16 autocast (except the LM head: :func:`yes_logit_gaps` computes the answer logits in float32), with a
    progress bar on the main process unless ``disable_tqdm``. A model trained with ``loss: yes_bce`` is scored as
    trained, by its Yes logit alone."""
    start = time.perf_counter()

    def score(encoded: datasets.Dataset, name: str) -> torch.Tensor:
        return yes_no_scores(model, tokenizer, encoded, collaborative, training_args, name)

    test_scores = {group: score(encoded, f"test {group}") for group, encoded in encoded_tests.items()}
    report = auc_report(test_scores, encoded_tests)
    if len(encoded_ranking):
        report.update(ranking_report(score(encoded_ranking, "ranking candidates"), num_negatives))
    report["eval_seconds"] = time.perf_counter() - start
    return report, torch.cat(list(test_scores.values()))


def yes_no_scores(model: nn.Module, tokenizer: PreTrainedTokenizerBase, encoded: datasets.Dataset,
                  collaborative: bool, training_args: TrainingArguments, name: str | None = None) -> torch.Tensor:
    """``[N]`` scores of the encoded samples as :func:`yes_no_report` computes them: ``per_device_eval_batch_size``
    prompts a batch, under the training's bf16 autocast with a float32 LM head (:func:`yes_logit_gaps`), the Yes
    logit alone for a ``loss: yes_bce`` model; a progress bar labelled ``Scoring <name>`` on the main process
    unless ``disable_tqdm`` or ``name`` is None."""
    yes, no = answer_token_ids(tokenizer)
    no = None if getattr(model, "loss", None) == "yes_bce" else no
    show_progress = name is not None and not training_args.disable_tqdm and training_args.process_index == 0
    autocast = torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16, enabled=training_args.bf16)
    with padded_batch_attention(model), autocast:  # scoring batches are padded
        return yes_logit_gaps(model, encoded, tokenizer.pad_token_id, yes, no, collaborative,
                              training_args.per_device_eval_batch_size, f"Scoring {name}" if show_progress else None)


def yes_probabilities(model: nn.Module, encoded: datasets.Dataset, pad_token_id: int, yes_id: int, no_id: int | None,
                      collaborative: bool, batch_size: int = 16) -> torch.Tensor:
    """``[N]`` float32 P(Yes) = ``sigmoid(gap)`` of :func:`yes_logit_gaps`, for reading probabilities. Do not rank
    by it: gaps above ~17 all round to 1.0 (see the module docstring)."""
    return torch.sigmoid(yes_logit_gaps(model, encoded, pad_token_id, yes_id, no_id, collaborative, batch_size))


def auc_report(scores: Mapping[str, torch.Tensor], test_sets: Mapping[str, datasets.Dataset]) -> dict:
    """``{"auc_warm": ..., "auc_cold": ..., "auc_all": ..., "n_warm": ..., "n_cold": ...}``, each AUC with its
    DeLong standard error (``auc_warm_se``, ...; :func:`llmrec_ft.eval.auc.auc_standard_error`), plus UAUC per
    group and overall (``uauc_*``, ``uauc_users_*``: how many users had both labels) when the sets have
    ``user_id``."""
    report, all_scores, all_labels, all_users = {}, [], [], []
    for group, dataset in test_sets.items():
        labels = torch.tensor(dataset["label"])
        report[f"n_{group}"] = len(labels)
        report[f"auc_{group}"], report[f"auc_{group}_se"] = _auc_and_error(scores[group], labels)
        all_scores.append(scores[group])
        all_labels.append(labels)
        if "user_id" in dataset.column_names:
            all_users.append(torch.tensor(dataset["user_id"]))
            report.update(_uauc_entries(group, scores[group], labels, all_users[-1]))
    labels = torch.cat(all_labels)
    report["auc_all"], report["auc_all_se"] = _auc_and_error(torch.cat(all_scores), labels)
    if len(all_users) == len(all_labels):
        report.update(_uauc_entries("all", torch.cat(all_scores), labels, torch.cat(all_users)))
    return report


def _uauc_entries(group: str, scores: torch.Tensor, labels: torch.Tensor, users: torch.Tensor) -> dict:
    user_ids, auc = user_auc(scores, labels, users) if len(labels) else (torch.empty(0), torch.empty(0))
    return {f"uauc_{group}": float(auc.mean()) if len(auc) else None, f"uauc_users_{group}": len(user_ids)}


def paired_auc_gaps(scores: torch.Tensor, baselines: Mapping[str, torch.Tensor | None],
                    test_sets: Mapping[str, datasets.Dataset]) -> dict:
    """``{"vs_<name>": {"auc_a", "auc_b", "gap", "gap_se", "z"}}``: the model's AUC over all test samples minus
    each baseline's on the same samples, with DeLong's paired standard error (:func:`auc_difference`).

    ``scores`` ``[N]`` and each baseline's ``[N]`` follow ``test_sets`` order (e.g. warm then cold, as
    :func:`auc_report`'s ``auc_all``); a baseline of ``None`` is chance (a constant score, AUC 0.5). Empty
    when the test samples hold fewer than 2 of a class (no standard error exists).
    """
    labels = torch.cat([torch.tensor(dataset["label"]) for dataset in test_sets.values()])
    if not 2 <= labels.sum() <= len(labels) - 2:
        return {}
    return {f"vs_{name}": auc_difference(scores, torch.zeros_like(scores) if baseline is None else baseline, labels)
            for name, baseline in baselines.items()}


def _auc_and_error(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float | None, float | None]:
    if not 0 < labels.sum() < len(labels):
        return None, None
    enough = 2 <= labels.sum() <= len(labels) - 2
    return roc_auc(scores, labels), auc_standard_error(scores, labels) if enough else None


def ranking_candidates(ds: datasets.DatasetDict, num_negatives: int, max_users: int | None, cf_max_len: int,
                       max_history: int, seed: int = 0) -> datasets.Dataset:
    """Pointwise rows for the sampled ranking protocol: for each test user (the first ``max_users`` of a
    seeded shuffle; None: all, 0: none, an empty Dataset), the leave-one-out target then ``num_negatives``
    uniformly sampled unseen items, all sharing the user's history. Rows of one user are consecutive, the target
    first."""
    if max_users == 0:
        return datasets.Dataset.from_dict({})
    test = ds["test"]
    if max_users is not None and max_users < len(test):
        test = test.shuffle(seed=seed).select(range(max_users))
    generator = torch.Generator().manual_seed(seed)
    targets = torch.tensor(test["target"])
    negatives = sample_negatives(targets, list(test["history"]), len(ds["items"]), num_negatives, generator)
    cold = [False, *ds["items"]["is_cold"]]
    rows = []
    for user, target, negative in zip(test, targets.tolist(), negatives.tolist()):
        history, liked = user["history"], user["history_liked"]
        for rank, candidate in enumerate([target, *negative]):
            rows.append({"user_id": user["user_id"], "position": len(history),
                         "history": history[-max_history:], "history_liked": liked[-max_history:],
                         "cf_history": history[-cf_max_len:], "candidate": candidate, "label": int(rank == 0),
                         "is_cold": cold[candidate]})
    return datasets.Dataset.from_list(rows)


def ranking_report(scores: torch.Tensor, num_negatives: int, ks=(10,)) -> dict:
    """HR@K / NDCG@K from scores laid out as :func:`ranking_candidates` rows."""
    per_user = candidate_metrics(scores.reshape(-1, num_negatives + 1), ks)
    return {name: float(values.double().mean()) for name, values in per_user.items()}


@torch.no_grad()
def sasrec_features(sasrec: nn.Module, samples: datasets.Dataset,
                    batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``(user [N, H], item [N, H])`` SASRec representations of each sample's history and candidate."""
    was_training = sasrec.training
    sasrec.eval()
    device = next(sasrec.parameters()).device
    users, items = [], []
    try:
        for rows in _batches(samples, batch_size):
            history = pad([row["cf_history"] for row in rows], 0, "left").to(device)
            candidates = torch.tensor([row["candidate"] for row in rows], device=device)
            users.append(sasrec.sequence_representation(history).float().cpu())
            items.append(sasrec.item_embeddings(candidates).float().cpu())
    finally:
        sasrec.train(was_training)
    return torch.cat(users), torch.cat(items)


def next_item_scores(sasrec: nn.Module, samples: datasets.Dataset) -> torch.Tensor:
    user, item = sasrec_features(sasrec, samples)
    return (user * item).sum(-1)


def sasrec_baseline_reports(sasrec: nn.Module, train: datasets.Dataset, test_sets: Mapping[str, datasets.Dataset],
                            ranking_rows: datasets.Dataset, num_negatives: int) -> dict:
    """``{"next_item": report, "classifier": report}``: the SASRec-alone rows (see the module docstring), with the
    same :func:`auc_report` and sampled ranking (skipped when ``ranking_rows`` is empty) as the LLM's rows;
    the classifier is fitted on ``train``."""
    classifier = SASRecClassifier(sasrec).fit(train)
    reports = {}
    for name, score in (("next_item", lambda data: next_item_scores(sasrec, data)), ("classifier", classifier.predict)):
        reports[name] = auc_report({group: score(samples) for group, samples in test_sets.items()}, test_sets)
        if len(ranking_rows):
            reports[name].update(ranking_report(score(ranking_rows), num_negatives))
    return reports


class SASRecClassifier:
    """Logistic regression on frozen SASRec features, fitted with L-BFGS (full batch, deterministic)."""

    def __init__(self, sasrec: nn.Module, l2: float = 1e-3):
        self.sasrec, self.l2 = sasrec, l2
        self.linear: nn.Linear | None = None

    @staticmethod
    def _features(user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return torch.cat([user * item, user, item], dim=-1)

    def fit(self, samples: datasets.Dataset, steps: int = 200) -> "SASRecClassifier":
        x = self._features(*sasrec_features(self.sasrec, samples))
        mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
        self._norm = (mean, std)
        x = (x - mean) / std
        y = torch.tensor(samples["label"], dtype=torch.float32)
        self.linear = nn.Linear(x.shape[1], 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        optimizer = torch.optim.LBFGS(self.linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(self.linear(x).squeeze(-1), y)
            loss = loss + self.l2 * self.linear.weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return self

    @torch.no_grad()
    def predict(self, samples: datasets.Dataset) -> torch.Tensor:
        """``[N]`` logits (log-odds of a like): rank-equivalent to the probability, without sigmoid saturation."""
        if self.linear is None:
            raise RuntimeError("call fit() before predict()")
        mean, std = self._norm
        x = (self._features(*sasrec_features(self.sasrec, samples)) - mean) / std
        return self.linear(x).squeeze(-1)
