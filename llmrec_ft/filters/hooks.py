"""Rewrite the output of every decoder layer of a HF model with forward hooks, undone on exit.

The backbone's code is never copied or subclassed: a hook sees each layer's output and may return a
replacement. Whatever the architecture (Llama, Qwen2, Mistral, SmolLM2) or wrapping (PEFT), the decoder
layers are the ``nn.ModuleList`` holding ``config.num_hidden_layers`` blocks of one class.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder layers (also found under a PEFT wrapper)."""
    config = getattr(model, "config", None)
    expected = getattr(config, "num_hidden_layers", None)
    for module in model.modules():
        if (isinstance(module, nn.ModuleList) and len(module) > 0
                and (expected is None or len(module) == expected)
                and len({type(layer) for layer in module}) == 1):
            return module
    raise ValueError(f"{type(model).__name__}: found no nn.ModuleList of {expected} decoder layers")


def _hidden_of(output):
    """Layers return the hidden states as a tensor (transformers >= 5) or as ``output[0]`` of a tuple (4.x)."""
    return output if isinstance(output, torch.Tensor) else output[0]


def _with_hidden(output, hidden: torch.Tensor):
    return hidden if isinstance(output, torch.Tensor) else (hidden, *output[1:])


@contextlib.contextmanager
def map_layer_outputs(model: nn.Module, fn: Callable[[int, torch.Tensor], torch.Tensor],
                      prepend: bool = False) -> Iterator[None]:
    """While inside, layer ``i`` outputs ``fn(i, hidden)`` instead of ``hidden`` (``[B, L, H]``).

    ``prepend=True`` runs our hook before any hook already registered, e.g. the ones transformers uses to
    collect ``output_hidden_states``, so they see the rewritten states. All hooks are removed on exit, even
    on error, leaving the model exactly as it was.
    """
    handles = []

    def make_hook(index: int):
        def hook(module, args, output):
            return _with_hidden(output, fn(index, _hidden_of(output)))
        return hook

    try:
        for index, layer in enumerate(decoder_layers(model)):
            handles.append(layer.register_forward_hook(make_hook(index), prepend=prepend))
        yield
    finally:
        for handle in handles:
            handle.remove()
