"""Collaborative (ID-based) sequential recommenders and the Trainer glue they share.

Importing this package registers every backbone with ``AutoConfig``/``AutoModel``, so
``AutoModel.from_pretrained(path)`` loads any saved ID model; :func:`load_id_model` loads the two that can serve
as an LLM's collaborative model.
"""

import json
from pathlib import Path

from transformers import AutoModel

from llmrec_ft.collab.base import SequenceModelOutput, SequentialRecommender
from llmrec_ft.collab.bert4rec import BERT4Rec, BERT4RecConfig
from llmrec_ft.collab.gru4rec import GRU4Rec, GRU4RecConfig
from llmrec_ft.collab.hstu import HSTU, HSTUConfig
from llmrec_ft.collab.sasrec import SASRec, SASRecConfig

__all__ = ["BERT4Rec", "BERT4RecConfig", "GRU4Rec", "GRU4RecConfig", "HSTU", "HSTUConfig", "SASRec", "SASRecConfig",
           "SequenceModelOutput", "SequentialRecommender", "load_id_model"]


def load_id_model(path: str | Path) -> SASRec | HSTU:
    """The SASRec or HSTU saved in ``path`` (by its ``config.json``), in eval mode.

    Wherever the toolkit takes a pretrained collaborative model (``sasrec_checkpoint`` of the LLM recipes, the
    Hub and :class:`~llmrec_ft.recommender.Recommender` loaders), either fits: they share the item-table layout
    (row 0 padding, rows ``1..N`` items), ``encode``, ``sequence_representation`` and a history of ``max_len``
    items. GRU4Rec and BERT4Rec are refused: BERT4Rec's table has a [MASK] row and reads ``max_len - 1`` items.

    Raises:
        FileNotFoundError: ``path`` has no ``config.json``.
        TypeError: the folder holds another model (checked on ``config.json``, before any weight is read).
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json, not a saved ID model (recipes/sasrec.py writes one)")
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type not in (SASRecConfig.model_type, HSTUConfig.model_type):
        raise TypeError(f"{path}: config.json has model_type {model_type!r}; a collaborative model must be a SASRec "
                        f"({SASRecConfig.model_type!r}) or an HSTU ({HSTUConfig.model_type!r}) from recipes/sasrec.py")
    return AutoModel.from_pretrained(path).eval()
