"""Batch inference on any trained artifact folder: ``Recommender.from_pretrained(dir_or_hub_id).recommend(...)``.

Three kinds of folders, told apart by what they hold:

* **generative** (``recipes/generative.py`` ``artifacts/``: ``config.yaml`` with ``recipe: generative``):
  catalogue-constrained beam search over semantic IDs or titles (``generative.evaluate.recommend_from_prompts``);
  the score is the item's sequence log-probability;
* **SASRecLLM** (``recipes/sasrecllm.py`` ``artifacts/``: ``config.yaml`` + ``projector.safetensors``): every
  catalogue item is a Yes/No candidate, scored through the shared-prefix scorer (``llm.prefix_scoring``:
  the history prompt runs once, then only the candidate suffixes); the score is ``logit(Yes) - logit(No)``;
* **SASRec** (``recipes/sasrec.py`` output: ``config.json`` of a SASRec, or of an HSTU): full-catalogue
  next-item logits.

Item ids in and out are the dataset's *raw* ids (strings, e.g. ASINs) when the folder carries ``catalog.json``
(generative artifacts) or its config names the dataset (SASRecLLM: re-prepared from the cache), and the
internal ``1..N`` ids (as strings) otherwise. An unknown id raises :class:`UnknownItemError` naming the
history (0-based) and position. Top-K lists hold distinct items, best first; with ``exclude_history`` the
user's history items are never returned.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import torch
import yaml

CONFIG_YAML, CATALOG_JSON = "config.yaml", "catalog.json"


class UnknownItemError(KeyError):
    """An input history holds an item id the model's catalogue does not have."""

    def __init__(self, history: int, position: int, item: str):
        super().__init__(f"history {history}, position {position}: unknown item id {item!r}")
        self.history, self.position, self.item = history, position, item

    def __str__(self) -> str:
        return self.args[0]


def _local_dir(dir_or_hub_id: str | Path) -> Path:
    path = Path(dir_or_hub_id)
    if path.is_dir():
        return path
    if path.exists() or str(dir_or_hub_id).count("/") != 1:
        raise FileNotFoundError(f"{dir_or_hub_id}: not an artifact folder nor a Hub id <user>/<repo>")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(dir_or_hub_id)))


class Recommender:
    """Use :meth:`from_pretrained`. ``raw_item_ids[i]`` is the external id of internal item ``i + 1``."""

    def __init__(self, kind: str, raw_item_ids: Sequence[str], scorer, device: torch.device):
        self.kind, self.raw_item_ids, self._scorer, self.device = kind, list(raw_item_ids), scorer, device
        self.item_index = {raw: i + 1 for i, raw in enumerate(self.raw_item_ids)}

    @classmethod
    def from_pretrained(cls, dir_or_hub_id: str | Path, device: str | torch.device | None = None) -> "Recommender":
        """Load a generative, SASRecLLM or SASRec folder (or download a Hub repo holding one)."""
        directory = _local_dir(dir_or_hub_id)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if (directory / CONFIG_YAML).exists():
            config = yaml.safe_load((directory / CONFIG_YAML).read_text())
            if config.get("recipe") == "generative":
                return cls._generative(directory, config, device)
            return cls._sasrecllm(directory, config, device)
        if (directory / "config.json").exists():
            from llmrec_ft.collab import load_id_model

            model = load_id_model(directory).to(device)
            raw = [str(i) for i in range(1, model.config.num_items + 1)]
            kind = model.config.model_type.removeprefix("llmrec_")  # "sasrec" or "hstu"
            return cls(kind, raw, _SASRecScorer(model), device)
        raise FileNotFoundError(f"{directory}: neither {CONFIG_YAML} (LLM artifacts) nor config.json (SASRec or HSTU)")

    @classmethod
    def _generative(cls, directory: Path, config: dict, device: torch.device) -> "Recommender":
        from llmrec_ft.collab import load_id_model
        from llmrec_ft.generative.evaluate import CatalogDecoder
        from llmrec_ft.generative.examples import ExampleConfig, GenerativeExamples
        from llmrec_ft.generative.pipeline import GenerativeEvalArgs, load_catalog, load_semantic_ids
        from llmrec_ft.generative.tokens import code_tokens
        from llmrec_ft.generative.training import GenerativeModelArgs, load_generative_model
        from llmrec_ft.llm.collaborative_lm import COLLAB_MODEL_DIR

        model_args, example_config, eval_args = (_fields(c, config) for c in
                                                 (GenerativeModelArgs, ExampleConfig, GenerativeEvalArgs))
        sids, catalog = load_semantic_ids(directory), load_catalog(directory)
        sasrec = load_id_model(directory / COLLAB_MODEL_DIR) if example_config.collaborative_tokens else None
        model, tokenizer, code_ids = load_generative_model(directory, model_args, sids, sasrec)
        model.to(device)
        examples = GenerativeExamples(tokenizer, catalog["titles"], example_config,
                                      ["".join(t) for t in code_tokens(sids)] if sids else None, code_ids)
        lm = model.lm if example_config.collaborative_tokens else model
        decoder = CatalogDecoder.from_examples(examples, lm.get_input_embeddings().weight.shape[0])
        scorer = _GenerativeScorer(model, examples, decoder, eval_args)
        return cls("generative", catalog["raw_item_ids"], scorer, device)

    @classmethod
    def _sasrecllm(cls, directory: Path, config: dict, device: torch.device) -> "Recommender":
        from llmrec_ft.data import DataConfig, prepare_dataset
        from llmrec_ft.hub import load_artifacts

        model, tokenizer, config = load_artifacts(directory)
        ds = prepare_dataset(_fields(DataConfig, config))
        titles = list(ds["items"][config.get("item_text_field", "title")])
        scorer = _YesNoScorer(model.to(device).eval(), tokenizer, titles, config)
        return cls("sasrecllm", ds["items"]["raw_item_id"], scorer, device)

    def to_internal(self, histories: Sequence[Sequence[str | int]]) -> list[list[int]]:
        """Raw ids -> internal ids; :class:`UnknownItemError` for the first unknown one."""
        out = []
        for h, history in enumerate(histories):
            row = []
            for p, item in enumerate(history):
                if str(item) not in self.item_index:
                    raise UnknownItemError(h, p, str(item))
                row.append(self.item_index[str(item)])
            out.append(row)
        return out

    def recommend(self, histories: Sequence[Sequence[str | int]], k: int = 10, exclude_history: bool = True,
                  batch_size: int = 16, progress=None) -> tuple[list[list[str]], list[list[float]]]:
        """Top-``k`` raw item ids and scores per history (oldest item first), best first. ``progress``: an
        optional ``tqdm``-like object advanced by the number of users done."""
        internal = self.to_internal(histories)
        items, scores = self._scorer(internal, k, exclude_history, batch_size, progress)
        return ([[self.raw_item_ids[i - 1] for i in row if i > 0] for row in items.tolist()],
                [[s for i, s in zip(irow, srow) if i > 0] for irow, srow in zip(items.tolist(), scores.tolist())])


def _fields(cls, config: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in config.items() if k in names})


def _top_k_of_scores(scores: torch.Tensor, histories: list[list[int]], k: int, exclude_history: bool):
    """``[U, N + 1]`` scores -> top-``k`` ``(items, scores)``; padding (and the history) masked to -inf."""
    scores = scores.float().clone()
    scores[:, 0] = float("-inf")
    if exclude_history:
        for row, history in enumerate(histories):
            scores[row, history] = float("-inf")
    top = scores.topk(min(k, scores.shape[1] - 1), dim=1)
    items = torch.where(torch.isinf(top.values), torch.zeros_like(top.indices), top.indices)
    return items.cpu(), top.values.cpu()


@dataclasses.dataclass
class _GenerativeScorer:
    model: torch.nn.Module
    examples: object
    decoder: object
    eval_args: object

    def __call__(self, histories, k, exclude_history, batch_size, progress):
        from llmrec_ft.generative.evaluate import recommend_from_prompts

        prompts = self.examples.encode_prompts([{"history": h} for h in histories])
        return recommend_from_prompts(self.model, self.decoder, prompts, histories,
                                      self.examples.tokenizer.pad_token_id, k=k,
                                      num_beams=max(k, self.eval_args.num_beams), exclude_history=exclude_history,
                                      batch_size=batch_size, decoding=self.eval_args.decoding, progress=progress)


@dataclasses.dataclass
class _SASRecScorer:
    model: torch.nn.Module

    @torch.no_grad()
    def __call__(self, histories, k, exclude_history, batch_size, progress):
        from llmrec_ft.collab.sequences import left_pad

        device, out_items, out_scores = next(self.model.parameters()).device, [], []
        for start in range(0, len(histories), batch_size):
            batch = histories[start:start + batch_size]
            ids = left_pad([h[-self.model.config.max_len:] for h in batch]).to(device)
            items, scores = _top_k_of_scores(self.model.score_all_items(ids), batch, k, exclude_history)
            out_items.append(items)
            out_scores.append(scores)
            if progress is not None:
                progress.update(len(batch))
        return torch.cat(out_items), torch.cat(out_scores)


@dataclasses.dataclass
class _YesNoScorer:
    """Every catalogue item as a Yes/No candidate of the SASRecLLM prompt, scored with the shared-prefix scorer.
    Input histories carry no ratings, so every history item is shown as liked (the toolkit's convention for
    implicit feedback, ``data.preprocess.liked``)."""

    model: torch.nn.Module
    tokenizer: object
    titles: list[str]
    config: dict

    def __call__(self, histories, k, exclude_history, batch_size, progress):
        from llmrec_ft.llm.prefix_scoring import score_prompts
        from llmrec_ft.llm.prompts import encode_prompt, load_prompt
        from llmrec_ft.train.pointwise_data import answer_token_ids

        # the prompt and score the run trained with (recipes/sasrecllm.py writes both into config.yaml); a
        # ``loss: yes_bce`` model is scored by its Yes logit alone, as train.scoring.yes_logit_gaps does
        template = load_prompt(self.config.get("prompt", "yes_no"), history_cf=self.config.get("history_cf_tokens", True))
        yes_no, yes_only = answer_token_ids(self.tokenizer), self.config.get("loss") == "yes_bce"
        max_history, cf_len = self.config.get("max_history", 10), self.config.get("cf_max_len", 50)
        slots = self.config.get("cf_tokens_per_slot", 1)
        out_items, out_scores = [], []
        for history in histories:
            scores = torch.full((len(self.titles) + 1,), float("-inf"))
            prompts, cf_items = [], []
            for candidate in range(1, len(self.titles) + 1):
                prompt = template.render(self.tokenizer, [self.titles[i - 1] for i in history], [True] * len(history),
                                         self.titles[candidate - 1], max_history=max_history,
                                         cf_tokens_per_slot=slots)
                prompts.append(encode_prompt(self.tokenizer, prompt.text))
                cf_items.append(prompt.cf_item_ids(history, candidate))
            logits = score_prompts(self.model, prompts, yes_no, cf_history=history[-cf_len:] or [0],
                                   cf_items=cf_items, chunk_size=batch_size)
            scores[1:] = (logits[:, 0] if yes_only else logits[:, 0] - logits[:, 1]).float().cpu()
            items, top = _top_k_of_scores(scores[None], [history], k, exclude_history)
            out_items.append(items)
            out_scores.append(top)
            if progress is not None:
                progress.update(1)
        return torch.cat(out_items), torch.cat(out_scores)


def read_histories(path: str | Path) -> tuple[list[dict], list[list[str]]]:
    """Rows of a JSON-lines input (``{"user_id": ..., "history": [item ids, oldest first]}`` per line) and their
    histories; a malformed line is a ``DataError`` naming the file, line and field."""
    from llmrec_ft.data.files import iter_json_lines
    from llmrec_ft.data.interactions import DataError

    rows, histories = [], []
    for line, obj in iter_json_lines(path):
        history = obj.get("history")
        if not isinstance(history, list) or not all(isinstance(i, (str, int)) for i in history):
            raise DataError(str(path), "expected a list of item ids (strings or integers)", line, "history")
        rows.append({"line": line, **obj})
        histories.append([str(i) for i in history])
    return rows, histories


def write_recommendations(path: str | Path, rows: list[dict], items: list[list[str]],
                          scores: list[list[float]]) -> None:
    """One JSON line per input row: its ``user_id`` (if any), ``items`` and ``scores``; written atomically."""
    from llmrec_ft.io import write_text

    lines = [json.dumps({**({"user_id": row["user_id"]} if "user_id" in row else {}), "items": i, "scores": s})
             for row, i, s in zip(rows, items, scores)]
    write_text(path, "".join(line + "\n" for line in lines))


def recommend_command(argv: list[str]) -> int:
    """``llmrec-ft recommend --model DIR --input users.jsonl --k 10 --out recs.jsonl`` (exit 2 on bad input)."""
    import argparse
    import sys

    from tqdm.auto import tqdm

    from llmrec_ft.data.interactions import DataError

    parser = argparse.ArgumentParser(prog="llmrec-ft recommend", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Artifact folder or Hub id (generative, SASRecLLM, SASRec).")
    parser.add_argument("--input", required=True, help='JSON lines: {"user_id": ..., "history": [item ids]}.')
    parser.add_argument("--out", required=True, help="Output JSON lines (written atomically).")
    parser.add_argument("--k", type=int, default=10, help="Items per user.")
    parser.add_argument("--include-history", action="store_true", help="Allow items already in the history.")
    parser.add_argument("--batch-size", type=int, default=16, help="Users per batch.")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:1 (default: cuda when available).")
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error(f"--k must be >= 1, got {args.k}")
    try:
        rows, histories = read_histories(args.input)
        try:
            recommender = Recommender.from_pretrained(args.model, args.device)
        except (FileNotFoundError, ValueError) as err:  # not an artifact folder, incomplete, or unknown kind
            print(f"error: --model {args.model}: {err}", file=sys.stderr)
            return 2
        recommender.to_internal(histories)  # fail on unknown ids before any model work
        with tqdm(total=len(histories), desc="recommend", unit="user") as progress:
            items, scores = recommender.recommend(histories, args.k, not args.include_history, args.batch_size,
                                                  progress)
    except UnknownItemError as err:
        where = DataError(args.input, f"unknown item id {err.item!r} at position {err.position}",
                          rows[err.history]["line"], "history")
        print(f"error: {where}", file=sys.stderr)
        return 2
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_recommendations(args.out, rows, items, scores)
    return 0


def evaluate_command(argv: list[str]) -> int:
    """``llmrec-ft evaluate --model DIR --out metrics.json [--split test] [--users N]``: a generative artifact
    folder's HR/NDCG/MRR@K on its own dataset (the data, beam and batch settings of its ``config.yaml``), as the
    recipe evaluated it. Under ``torchrun`` / ``accelerate launch`` the users are split over the processes with
    identical results (``generative.evaluate.evaluate_generative``); the main process writes ``--out`` (metrics
    and each user's top-K item ids, atomically) and prints the metrics. Exit 2 for a non-generative folder."""
    import argparse
    import sys

    from accelerate import PartialState

    from llmrec_ft.data import DataConfig, prepare_dataset
    from llmrec_ft.generative.evaluate import evaluate_generative
    from llmrec_ft.io import write_json

    parser = argparse.ArgumentParser(prog="llmrec-ft evaluate", description=evaluate_command.__doc__.split(":")[0])
    parser.add_argument("--model", required=True, help="Generative artifact folder or Hub id.")
    parser.add_argument("--out", required=True, help="Output JSON: metrics + top_k (written atomically).")
    parser.add_argument("--split", default="test", choices=["valid", "test"], help="Leave-one-out split.")
    parser.add_argument("--users", type=int, default=None, help="First N users (default: the config's eval_users).")
    parser.add_argument("--batch-size", type=int, default=None, help="Users per beam-search batch (default: config).")
    parser.add_argument("--device", default=None, help="Default: this process's device (PartialState).")
    args = parser.parse_args(argv)
    # cpu=True is what makes Accelerate join a torchrun world over gloo (MULTI_CPU) rather than stay single
    state = PartialState(cpu=str(args.device).startswith("cpu") or not torch.cuda.is_available())
    directory = _local_dir(args.model)
    config = yaml.safe_load((directory / CONFIG_YAML).read_text()) if (directory / CONFIG_YAML).exists() else {}
    if config.get("recipe") != "generative":
        print(f"error: {directory}: not a generative artifact folder ({CONFIG_YAML} without recipe: generative)",
              file=sys.stderr)
        return 2
    with state.main_process_first():  # the first preparation writes the dataset cache, once
        ds = prepare_dataset(_fields(DataConfig, config))
    scorer = Recommender.from_pretrained(directory, args.device or state.device)._scorer
    eval_args = scorer.eval_args
    result = evaluate_generative(scorer.model, scorer.examples, scorer.decoder, ds, args.split, ks=eval_args.eval_ks,
                                 num_beams=eval_args.num_beams,
                                 max_users=args.users if args.users is not None else eval_args.eval_users,
                                 batch_size=args.batch_size or eval_args.eval_batch_size, decoding=eval_args.decoding)
    if state.is_main_process:
        write_json(args.out, {**result, "split": args.split})
        print(json.dumps({k: v for k, v in result.items() if k != "top_k"}, indent=2))
    return 0
