"""DeepSpeed ZeRO-3 and the hybrid model: assemble it from whole weights, let DeepSpeed partition it after.

Under ZeRO-3, transformers builds every ``from_pretrained`` model inside ``deepspeed.zero.Init``, so each rank
holds 1/N of every weight from the start. Assembling the hybrid model reads whole weights: the embedding
matrix grows rows for the placeholder tokens (initialised to the mean row), its norm sets the projector's
output scale, and SASRec loads a plain state dict (a partitioned SASRec loads as empty tensors). So the
recipe builds the model with transformers' ZeRO-3 switch off, and DeepSpeed partitions it when Trainer
starts its engine, as it does for any model not built under ``zero.Init``. Cost: until then every rank holds
the whole model in host memory (15 GB for a 7B model in bf16). Accelerate's own
``DeepSpeedPlugin.zero3_init_context_manager(enable=False)`` is meant for this, but (accelerate 1.15) it
re-registers the config it should hide, so this module clears transformers' reference directly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from transformers import TrainingArguments


@contextlib.contextmanager
def whole_weights(training_args: TrainingArguments) -> Iterator[None]:
    """Inside the block, ``from_pretrained`` loads whole (unpartitioned) weights even under ZeRO-3."""
    plugin = getattr(training_args, "deepspeed_plugin", None)
    if plugin is None:
        yield
        return
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()
