"""An HF causal LM whose placeholder tokens are replaced by projected collaborative vectors.

This is SASRecLLM's hybrid encoding: the prompt is tokenized as usual, its token embeddings are looked up,
and at every ``<|user_cf|>`` / ``<|item_cf|>`` position the embedding is overwritten by the projection of
the ID model's user representation / item embedding. The LM then runs on ``inputs_embeds`` (the same
mechanism LLaVA uses for image features), so any HF causal LM works, plain or PEFT-wrapped, and HF computes
the loss from ``labels``. Padded batches and packed ones (``llmrec_ft.llm.packing``: all prompts in one row,
one ``cf_history`` row per prompt) both work, since vectors are placed in order of appearance.

Gradients: the scattered vectors come from the projector (and the ID model), so they reach those modules
whenever they are trainable; LoRA gets gradients through the LM as usual. Activation checkpointing is
non-reentrant (``enable_activation_checkpointing``), which does not need inputs that require grad, so
text-only prompts (no placeholders) train LoRA too.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict
from peft.utils import CONFIG_NAME as ADAPTER_CONFIG_NAME
from peft.utils import SAFETENSORS_WEIGHTS_NAME as ADAPTER_WEIGHTS_NAME
from safetensors import safe_open
from safetensors.torch import load_file, load_model, save_file
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from llmrec_ft.io import atomic_path, write_json
from llmrec_ft.llm import answer_loss
from llmrec_ft.llm.backbone import enable_activation_checkpointing
from llmrec_ft.llm.projector import CollaborativeProjector
from llmrec_ft.llm.tokens import ITEM_CF_TOKEN, USER_CF_TOKEN, CollaborativeTokenIds, add_collaborative_tokens

CONFIG_NAME = "collaborative_lm.json"
PROJECTOR_NAME = "projector.safetensors"
COLLAB_MODEL_DIR = "collab_model"
COLLAB_WEIGHTS_NAME = "model.safetensors"
FULL_MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                      "pytorch_model.bin.index.json")


class CollaborativeLM(nn.Module):
    """``lm`` (HF causal LM, optionally PEFT-wrapped) + ``projector`` + ``collab_model`` (an ID model with
    ``sequence_representation(ids) -> [B, h]`` and ``item_embeddings(ids) -> [..., h]``, e.g. SASRec).

    Typical setup::

        lm, tokenizer = load_backbone("smollm2-135m-instruct")
        token_ids = add_collaborative_tokens(tokenizer, lm)      # before get_peft_model
        lm = get_peft_model(lm, LoraConfig(...))
        projector = CollaborativeProjector(64, 320, lm.get_input_embeddings().embedding_dim, tokens_per_slot=1)
        projector.scale_to_embedding_norm_(sasrec.item_embeddings.weight[1:], lm.get_input_embeddings().weight)
        model = CollaborativeLM(lm, projector, sasrec, token_ids)
    """

    def __init__(self, lm: nn.Module, projector: CollaborativeProjector, collab_model: nn.Module | None,
                 token_ids: CollaborativeTokenIds, answer_only_loss: bool = False):
        super().__init__()
        self.lm, self.projector, self.collab_model = lm, projector, collab_model
        self.token_ids = CollaborativeTokenIds(*token_ids)
        self.answer_only_loss = answer_only_loss
        width = lm.get_input_embeddings().weight.shape[1]  # also behind PEFT's TrainableTokensWrapper
        if projector.out_dim != width:
            raise ValueError(f"projector.out_dim={projector.out_dim} but the LM's embeddings are {width} wide")

    @property
    def config(self):
        """The LM's config, so Trainer and friends that read ``model.config`` keep working."""
        return self.lm.config

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **kwargs) -> None:
        """What Trainer calls for ``gradient_checkpointing=True``; always non-reentrant (see module doc)."""
        enable_activation_checkpointing(self.lm)

    activation_checkpointing_enable = gradient_checkpointing_enable

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, cf_history: torch.Tensor | None = None,
                cf_items: torch.Tensor | None = None, **kwargs):
        """``cf_history``: ``[B, L]`` item ids, left-padded with 0 as the ID model expects, for the user slot of
        every row; ``cf_items``: ``[B, S]`` item ids for the item slots in order of appearance (0 = pad).
        Both may be omitted for text-only prompts. Other keyword arguments go to the LM unchanged.

        With ``answer_only_loss`` and labels, only the labelled positions go through the LM head
        (``llmrec_ft.llm.answer_loss``: same loss, far less memory); ``logits`` then holds one row per
        labelled token instead of ``[B, T, V]``."""
        inputs_embeds = self.embed(input_ids, cf_history, cf_items)
        if labels is not None and self.answer_only_loss:
            kwargs.pop("use_cache", None)
            out = answer_loss.answer_only_loss(self.lm, labels, kwargs.pop("num_items_in_batch", None),
                                               inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
            return CausalLMOutputWithPast(loss=out.loss, logits=out.logits)
        return self.lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, **kwargs)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 cf_history: torch.Tensor | None = None, cf_items: torch.Tensor | None = None, **kwargs):
        """``lm.generate`` on the injected embeddings (e.g. next-item titles); returns only the new tokens."""
        return self.lm.generate(inputs_embeds=self.embed(input_ids, cf_history, cf_items),
                                attention_mask=attention_mask, **kwargs)

    def embed(self, input_ids: torch.Tensor, cf_history: torch.Tensor | None = None,
              cf_items: torch.Tensor | None = None) -> torch.Tensor:
        """The LM's token embeddings with collaborative vectors at the placeholder positions.

        The collaborative model and projector run outside autocast, in their weights' dtype (float32: both are
        built in float32; DeepSpeed or FSDP mixed precision cast them like the rest of the model): they are a few
        hundred thousand parameters (no measurable time), and the injected vectors carry the whole collaborative
        signal. On the default MovieLens-100K job (SmolLM2-135M, bf16 autocast, seed 42, one run each) a bf16
        projector gave the hybrid stage AUC 0.741 against 0.753 with this float32 one (text-only stage 0.733 in
        both)."""
        if self.collab_model is None and (cf_history is not None or cf_items is not None):
            raise ValueError("cf_history/cf_items were given but this CollaborativeLM has no collab_model")
        inputs_embeds = self.lm.get_input_embeddings()(input_ids)
        k = self.projector.tokens_per_slot

        no_vectors = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        user_mask = input_ids == self.token_ids.user
        supplied = no_vectors.new_full((len(cf_history),), k) if cf_history is not None else no_vectors
        self._check_counts(user_mask, supplied, USER_CF_TOKEN, "cf_history")
        if cf_history is not None:
            with torch.autocast(input_ids.device.type, enabled=False):
                vectors = self.projector(self.collab_model.sequence_representation(cf_history))
            inputs_embeds = self._scatter(inputs_embeds, user_mask, vectors)

        item_mask = input_ids == self.token_ids.item
        supplied = k * (cf_items > 0).sum(dim=1) if cf_items is not None else no_vectors
        self._check_counts(item_mask, supplied, ITEM_CF_TOKEN, "cf_items")
        if cf_items is not None and item_mask.any():
            with torch.autocast(input_ids.device.type, enabled=False):
                vectors = self.projector(self.collab_model.item_embeddings(cf_items[cf_items > 0]))
            inputs_embeds = self._scatter(inputs_embeds, item_mask, vectors)
        return inputs_embeds

    @staticmethod
    def _scatter(inputs_embeds: torch.Tensor, mask: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        # Row-major order of ``mask`` matches the order of ``vectors`` ([N, k, d] flattened to [N * k, d]).
        # Out of place, so it also works when the embedding output is a leaf that requires grad.
        vectors = vectors.reshape(-1, vectors.shape[-1]).to(inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(mask.unsqueeze(-1), vectors)

    def _check_counts(self, mask: torch.Tensor, supplied: torch.Tensor, token: str, argument: str) -> None:
        """``supplied``: vectors per row of the cf input. Its rows are the batch rows, except for packed
        batches (``llmrec_ft.llm.packing``: all prompts in one row, one ``cf_history`` row per prompt),
        where only the totals can be compared."""
        found, k = mask.sum(dim=1), self.projector.tokens_per_slot
        hint = f"(tokens_per_slot={k} per slot; render prompts with the same cf_tokens_per_slot, one id per slot)"
        if len(supplied) != len(found):
            if found.sum() != supplied.sum():
                raise ValueError(f"packed batch: input_ids holds {found.sum().item()} {token} placeholders but "
                                 f"{argument} gives {supplied.sum().item()} vectors {hint}")
            return
        bad = (found != supplied).nonzero()
        if len(bad):
            row = bad[0].item()
            raise ValueError(f"batch row {row}: input_ids holds {found[row].item()} {token} placeholders but "
                             f"{argument} gives {supplied[row].item()} vectors {hint}")

    def save_pretrained(self, save_directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None,
                        **kwargs) -> None:
        """Write the LM (a PEFT adapter if PEFT-wrapped, else the full model), ``projector.safetensors``,
        the ID model's weights under ``collab_model/`` and, last, ``collaborative_lm.json``.

        ``state_dict`` is this wrapper's full state dict as Trainer gathers it under FSDP or DeepSpeed
        (``accelerator.get_state_dict``), where the live parameters are shards or views into flat buffers;
        without it the live parameters are saved. Tensors are cloned before writing, so parameters that
        share one flat storage (DeepSpeed ZeRO-2) save like any others.

        Each file is replaced atomically and other files in ``save_directory`` are left alone (Trainer saves
        into folders that also hold its checkpoints and logs). The adapter is saved without the resized
        embedding matrices: ``add_collaborative_tokens`` rebuilds them exactly, and the placeholder rows are
        overwritten at every forward anyway.
        """
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        state_dict = state_dict if state_dict is not None else self.state_dict()
        if hasattr(self.lm, "peft_config"):
            kwargs.setdefault("save_embedding_layers", False)
        with tempfile.TemporaryDirectory(dir=save_directory, prefix=".lm.") as tmp:
            self.lm.save_pretrained(tmp, state_dict=_part(state_dict, "lm."), **kwargs)
            for path in Path(tmp).iterdir():
                os.replace(path, save_directory / path.name)
        with atomic_path(save_directory / PROJECTOR_NAME) as tmp:
            save_file(_cloned(_part(state_dict, "projector.")), str(tmp))
        if self.collab_model is not None:
            collab_state = _part(state_dict, "collab_model.")
            with atomic_path(save_directory / COLLAB_MODEL_DIR) as tmp:
                if hasattr(self.collab_model, "save_pretrained"):
                    self.collab_model.save_pretrained(tmp, state_dict=_cloned(collab_state))
                else:
                    tmp.mkdir()
                    save_file(_cloned(collab_state), str(tmp / "model.safetensors"))
        write_json(save_directory / CONFIG_NAME, {"projector": self.projector.config,
                                                  "token_ids": self.token_ids._asdict(),
                                                  "tokens": {"user": USER_CF_TOKEN, "item": ITEM_CF_TOKEN},
                                                  "lm_weights": "adapter" if hasattr(self.lm, "peft_config") else "full",
                                                  "collab_model": self.collab_model is not None})

    @classmethod
    def from_pretrained(cls, save_directory: str | Path, lm: nn.Module, tokenizer, collab_model: nn.Module | None,
                        is_trainable: bool = False) -> "CollaborativeLM":
        """Rebuild from ``save_pretrained`` output. ``lm`` is the *base* model (``load_backbone`` of the same
        checkpoint); the placeholders are added to it and the saved adapter is loaded on top (for a saved full
        fine-tune, pass ``load_backbone(save_directory)`` instead). ``collab_model`` is an instance of the same
        ID-model class; its saved weights are loaded into it.

        Raises ``FileNotFoundError`` naming every missing file (see :func:`missing_saved_files`) and
        ``ValueError`` listing LoRA tensors the adapter file lacks: a folder never loads as the bare base model."""
        save_directory = Path(save_directory)
        config = _read_config(save_directory)
        _require_saved_files(save_directory, collab_model is not None)
        token_ids = add_collaborative_tokens(tokenizer, lm)
        if _saved_lm_weights(save_directory, config) == "adapter":
            lm = PeftModel.from_pretrained(lm, save_directory, is_trainable=is_trainable)
            _check_adapter_complete(lm, save_directory)
        model = cls(lm, CollaborativeProjector(**config["projector"]), collab_model, token_ids)
        model._load_projector_and_collab_model(save_directory, config)
        return model

    def load_pretrained_weights(self, save_directory: str | Path) -> None:
        """Load ``save_pretrained`` output into this (PEFT-wrapped) model in place: what resuming a Trainer
        checkpoint needs, since the optimizer already holds these exact parameters."""
        save_directory = Path(save_directory)
        if not hasattr(self.lm, "peft_config"):
            raise ValueError("in-place loading needs a PEFT-wrapped LM; reload a full fine-tune with "
                             f"load_backbone({str(save_directory)!r})")
        config = _read_config(save_directory)
        _require_saved_files(save_directory, self.collab_model is not None, lm_weights="adapter")
        result = set_peft_model_state_dict(self.lm, load_file(save_directory / ADAPTER_WEIGHTS_NAME))
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"{save_directory}: adapter weights {result.unexpected_keys[:3]}... do not fit the model")
        # missing_keys also lists every base-model weight; the adapter's own carry its name (".default.")
        adapter_names = [f".{name}." for name in self.lm.peft_config]
        _raise_if_missing_adapter_tensors(save_directory, [key for key in result.missing_keys
                                                           if any(name in key for name in adapter_names)])
        self._load_projector_and_collab_model(save_directory, config)

    def _load_projector_and_collab_model(self, save_directory: Path, config: dict) -> None:
        if config["token_ids"] != self.token_ids._asdict():
            raise ValueError(f"{save_directory / CONFIG_NAME}: placeholders were ids {config['token_ids']} at save "
                             f"time but are {self.token_ids._asdict()} now; use the same base model and tokenizer")
        if config["projector"] != self.projector.config:
            raise ValueError(f"{save_directory / CONFIG_NAME}: saved projector {config['projector']} does not match "
                             f"this model's {self.projector.config}")
        load_model(self.projector, str(save_directory / PROJECTOR_NAME))
        if self.collab_model is not None:
            load_model(self.collab_model, str(save_directory / COLLAB_MODEL_DIR / COLLAB_WEIGHTS_NAME))


def _part(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of one submodule (``prefix`` = ``"projector."`` etc.), with the prefix removed."""
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}


def _cloned(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone().contiguous() for key, value in state_dict.items()}


def _saved_lm_weights(save_directory: Path, config: dict) -> str:
    """``"adapter"`` or ``"full"``: what ``save_pretrained`` wrote for the LM. Folders saved before this was
    recorded in ``collaborative_lm.json`` are judged by their files (an adapter unless full weights are there)."""
    if "lm_weights" in config:
        return config["lm_weights"]
    has_full = any((save_directory / name).exists() for name in FULL_MODEL_WEIGHTS)
    return "full" if has_full and not (save_directory / ADAPTER_CONFIG_NAME).exists() else "adapter"


def missing_saved_files(save_directory: str | Path, with_collab_model: bool = True,
                        lm_weights: str | None = None) -> list[str]:
    """Files a ``save_pretrained`` folder must hold but does not (paths relative to it; empty = complete):
    ``collaborative_lm.json``, ``projector.safetensors``, the LoRA adapter (``adapter_config.json`` +
    ``adapter_model.safetensors``) or, for a full fine-tune, the model weights, and ``collab_model/
    model.safetensors`` when ``with_collab_model``. ``lm_weights`` overrides what the config records."""
    save_directory = Path(save_directory)
    if not (save_directory / CONFIG_NAME).exists():
        return [CONFIG_NAME]
    config = json.loads((save_directory / CONFIG_NAME).read_text())
    needed = [PROJECTOR_NAME]
    if (lm_weights or _saved_lm_weights(save_directory, config)) == "adapter":
        needed += [ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME]
    elif not any((save_directory / name).exists() for name in FULL_MODEL_WEIGHTS):
        needed += [FULL_MODEL_WEIGHTS[0]]
    if with_collab_model:
        needed.append(f"{COLLAB_MODEL_DIR}/{COLLAB_WEIGHTS_NAME}")
    return [name for name in needed if not (save_directory / name).exists()]


def _require_saved_files(save_directory: Path, with_collab_model: bool, lm_weights: str | None = None) -> None:
    missing = missing_saved_files(save_directory, with_collab_model, lm_weights)
    if missing:
        raise FileNotFoundError(f"{save_directory}: incomplete CollaborativeLM checkpoint, missing {missing}; "
                                f"refusing to load (the model would run with untrained weights)")


def _check_adapter_complete(lm: nn.Module, save_directory: Path) -> None:
    """``ValueError`` listing the tensors of ``lm``'s (freshly loaded) adapter that the saved adapter file lacks:
    PEFT itself only warns and leaves them at their initial values."""
    with safe_open(str(save_directory / ADAPTER_WEIGHTS_NAME), "pt") as handle:
        saved = set(handle.keys())
    expected = get_peft_model_state_dict(lm, save_embedding_layers=False)
    _raise_if_missing_adapter_tensors(save_directory, [key for key in expected if key not in saved])


def _raise_if_missing_adapter_tensors(save_directory: Path, missing: list[str]) -> None:
    if missing:
        missing = sorted(missing)
        raise ValueError(f"{save_directory / ADAPTER_WEIGHTS_NAME} lacks {len(missing)} LoRA tensor(s) of the adapter, "
                         f"which would keep their initial values: {missing[:8]}{' ...' if len(missing) > 8 else ''}")


def _read_config(save_directory: Path) -> dict:
    path = save_directory / CONFIG_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: not a CollaborativeLM.save_pretrained directory")
    return json.loads(path.read_text())
