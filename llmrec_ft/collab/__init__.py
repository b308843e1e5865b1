"""Collaborative (ID-based) sequential recommenders and the Trainer glue they share.

Importing this package registers every backbone with ``AutoConfig``/``AutoModel``, so
``AutoModel.from_pretrained(path)`` loads any saved ID model.
"""

from llmrec_ft.collab.base import SequenceModelOutput, SequentialRecommender
from llmrec_ft.collab.bert4rec import BERT4Rec, BERT4RecConfig
from llmrec_ft.collab.gru4rec import GRU4Rec, GRU4RecConfig
from llmrec_ft.collab.hstu import HSTU, HSTUConfig
from llmrec_ft.collab.sasrec import SASRec, SASRecConfig

__all__ = ["BERT4Rec", "BERT4RecConfig", "GRU4Rec", "GRU4RecConfig", "HSTU", "HSTUConfig", "SASRec", "SASRecConfig", "SequenceModelOutput",
           "SequentialRecommender"]
