"""llmrec-ft: fine-tune LLMs as sequential recommenders that keep collaborative signal."""

__version__ = "0.1.0"
