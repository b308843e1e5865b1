"""Collaborative (ID-based) sequential recommenders and the Trainer glue they share.

Importing this package registers every backbone with ``AutoConfig``/``AutoModel``, so
``AutoModel.from_pretrained(path)`` loads any saved ID model; :func:`load_id_model` does that and checks it.
"""

from pathlib import Path

from transformers import AutoModel

from llmrec_ft.collab.base import SequenceModelOutput, SequentialRecommender
from llmrec_ft.collab.bert4rec import BERT4Rec, BERT4RecConfig
from llmrec_ft.collab.gru4rec import GRU4Rec, GRU4RecConfig
from llmrec_ft.collab.hstu import HSTU, HSTUConfig
from llmrec_ft.collab.sasrec import SASRec, SASRecConfig

__all__ = ["BERT4Rec", "BERT4RecConfig", "GRU4Rec", "GRU4RecConfig", "HSTU", "HSTUConfig", "SASRec", "SASRecConfig",
           "SequenceModelOutput", "SequentialRecommender", "load_id_model"]


def load_id_model(path: str | Path) -> SequentialRecommender:
    """The ID model saved in ``path`` (SASRec, HSTU, GRU4Rec or BERT4Rec, by its ``config.json``), in eval mode.

    Wherever the toolkit takes a pretrained collaborative model (``sasrec_checkpoint`` of the LLM recipes, the
    Hub and :class:`~llmrec_ft.recommender.Recommender` loaders), any of them fits: they share the item table,
    ``encode`` and ``sequence_representation`` (:class:`SequentialRecommender`).

    Raises:
        FileNotFoundError: ``path`` has no ``config.json``.
        TypeError: the folder holds a model that is not one of the toolkit's ID models.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json, not a saved ID model (recipes/sasrec.py writes one)")
    model = AutoModel.from_pretrained(path)
    if not isinstance(model, SequentialRecommender):
        raise TypeError(f"{path}: holds a {type(model).__name__}, not an ID model (SASRec, HSTU, GRU4Rec, BERT4Rec)")
    return model.eval()
