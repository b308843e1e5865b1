"""Data: sources -> validated leave-one-out sequences as a ``datasets.DatasetDict``."""

from llmrec_ft.data.interactions import DataError
from llmrec_ft.data.prepare import (DATASETS, DataConfig, build_dataset, item_texts, load_manifest, load_prepared,
                                   num_items, prepare_dataset)

__all__ = ["DATASETS", "DataConfig", "DataError", "build_dataset", "item_texts", "load_manifest", "load_prepared",
           "num_items", "prepare_dataset"]
