"""SASRecLLM training: Yes/No samples, the hybrid-model collator, TRL trainer, freezing schedules, scoring.

``pointwise_data`` -> ``collator`` -> ``trainer`` (``SFTTrainer`` subclass) driven by ``schedules`` (with
``freezing``); ``scoring`` evaluates. ``recipes/sasrecllm.py`` wires them together.
"""
