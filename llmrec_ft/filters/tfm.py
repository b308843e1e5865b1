"""TFM (Temporal Frequency Modulation, FreLLM4Rec §TFM): low-pass every decoder layer's output along time.

After each decoder layer the hidden states of a user's history ``h[0..n-1]`` (one position per item) are
taken to the frequency domain along the sequence axis, multiplied by a Butterworth low-pass response and
brought back::

    h <- (1 - s) * h + s * irfft( H(w) * rfft(h) ),     H(w) = 1 / sqrt(1 + (w / w_c)^(2 n))

Choices, checked against the authors' code (github.com/BDML-lab/FreLLM4Rec, ``models/projector.py``):

* **Frequency units**: ``w = 2k / n`` for rfft bin ``k`` of a length-``n`` sequence, i.e. a fraction of the
  Nyquist frequency in ``[0, 1]``; ``cutoff`` (w_c) uses the same units. The authors normalise by the
  number of bins minus one (the same for even ``n``) and round w_c down to a bin; we keep w_c continuous.
  Their default w_c is 0.1 with order n = 2, which are our defaults.
* **Replacement, not a residual**: the authors replace the layer output by the filtered one (``s = 1``),
  our default; ``strength`` < 1 mixes in the unfiltered states for a gentler variant.
* **Padding-aware** (the authors' code runs the FFT over the padded sequence): each row is filtered over
  its real positions only, with the FFT length equal to its own length, and padding positions are
  passed through untouched, so a history gives the same result whatever the batch's padding.
* ``norm="ortho"`` rfft/irfft as in the authors' code (the round trip is the identity either way).
* No dropout on the filtered states: the backbone runs in eval mode (the authors use p = 0.2).

The filter is non-causal (position t sees later positions). That is harmless for our protocol, which trains
and scores only the last position, whose target is never in the input. The authors' protocol trains every
position of a sequence that contains the targets, so there position t sees item t + 1 (a train-time leak,
:mod:`~llmrec_ft.filters.frellm4rec_authors`). ``causal=True`` gives the one-sided variant that removes it:
position t is filtered as if the sequence ended at t (row t of the length-(t + 1) filter), so it never sees
a later position; at the last position it equals the non-causal filter.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn

from llmrec_ft.filters.hooks import map_layer_outputs


def _check(cutoff: float, order: int, strength: float = 1.0) -> None:
    if not 0 < cutoff <= 1:
        raise ValueError(f"TFM cutoff must be in (0, 1] (a fraction of the Nyquist frequency), got {cutoff}")
    if order < 1 or int(order) != order:
        raise ValueError(f"TFM order must be an integer >= 1, got {order}")
    if not 0 <= strength <= 1:
        raise ValueError(f"TFM strength must be in [0, 1], got {strength}")


def butterworth_gain(length: int, cutoff: float, order: int) -> torch.Tensor:
    """``[length // 2 + 1]`` gains of the rfft bins of a length-``length`` sequence."""
    _check(cutoff, order)
    frequency = 2 * torch.arange(length // 2 + 1, dtype=torch.float64) / length
    return 1 / torch.sqrt(1 + (frequency / cutoff) ** (2 * order))


@functools.lru_cache(maxsize=256)
def _operator(length: int, cutoff: float, order: int) -> torch.Tensor:
    identity = torch.eye(length, dtype=torch.float64)
    spectrum = torch.fft.rfft(identity, dim=0, norm="ortho") * butterworth_gain(length, cutoff, order)[:, None]
    return torch.fft.irfft(spectrum, n=length, dim=0, norm="ortho")


def butterworth_operator(length: int, cutoff: float, order: int) -> torch.Tensor:
    """``[length, length]`` float64 matrix ``M`` with ``M @ x == irfft(H * rfft(x))`` along the first axis.

    Filtering a short sequence is a small linear map; as a matrix it batches over rows of different
    lengths in one ``bmm`` and is exactly the FFT formulation (tested against it).
    """
    return _operator(length, float(cutoff), int(order))


@functools.lru_cache(maxsize=256)
def _causal_operator(length: int, cutoff: float, order: int) -> torch.Tensor:
    rows = [torch.cat([_operator(t + 1, cutoff, order)[t], torch.zeros(length - t - 1, dtype=torch.float64)])
            for t in range(length)]
    return torch.stack(rows)


def causal_butterworth_operator(length: int, cutoff: float, order: int) -> torch.Tensor:
    """``[length, length]`` lower-triangular float64 matrix: row ``t`` is the last row of the length-``t + 1``
    :func:`butterworth_operator`, i.e. position ``t`` filtered over positions ``0..t`` only (no look-ahead)."""
    _check(cutoff, order)
    return _causal_operator(length, float(cutoff), int(order))


def temporal_operators(attention_mask: torch.Tensor, cutoff: float = 0.1, order: int = 2,
                       strength: float = 1.0, causal: bool = False) -> torch.Tensor:
    """``[B, L, L]`` float64 per-row operators: the (mixed) Butterworth filter on each row's real positions
    (where ``attention_mask`` is 1, in order, wherever the padding sits), the identity on padding positions.
    ``causal=True`` uses :func:`causal_butterworth_operator` (no position sees a later one)."""
    _check(cutoff, order, strength)
    operator = causal_butterworth_operator if causal else butterworth_operator
    batch, width = attention_mask.shape
    real = attention_mask.bool().cpu()
    operators = torch.eye(width, dtype=torch.float64).repeat(batch, 1, 1)
    for row in range(batch):
        positions = real[row].nonzero().squeeze(1)
        length = len(positions)
        if length:
            mixed = (1 - strength) * torch.eye(length, dtype=torch.float64) + strength * operator(
                length, cutoff, order)
            operators[row][positions[:, None], positions[None, :]] = mixed
    return operators


def apply_temporal_operators(hidden: torch.Tensor, attention_mask: torch.Tensor,
                             operators: torch.Tensor) -> torch.Tensor:
    if hidden.shape[:2] != attention_mask.shape:
        raise ValueError(f"TFM: hidden states {tuple(hidden.shape)} do not match the attention mask "
                         f"{tuple(attention_mask.shape)}; TFM filters whole sequences and cannot run on a KV cache")
    real = attention_mask.bool()[..., None]
    # Zero the padding before mixing (a padding state may be anything, even NaN), then put it back.
    clean = hidden.masked_fill(~real, 0)
    mixed = torch.bmm(operators.to(device=hidden.device, dtype=hidden.dtype), clean)
    return torch.where(real, mixed, hidden)


def temporal_low_pass(hidden: torch.Tensor, attention_mask: torch.Tensor, cutoff: float = 0.1, order: int = 2,
                      strength: float = 1.0) -> torch.Tensor:
    """Filter ``hidden`` ``[B, L, H]`` along ``L`` over the positions where ``attention_mask`` ``[B, L]`` is 1."""
    return apply_temporal_operators(hidden, attention_mask, temporal_operators(attention_mask, cutoff, order, strength))


@contextlib.contextmanager
def temporal_frequency_modulation(model: nn.Module, attention_mask: torch.Tensor, cutoff: float = 0.1,
                                  order: int = 2, strength: float = 1.0) -> Iterator[None]:
    """Apply :func:`temporal_low_pass` to the output of every decoder layer of ``model`` while inside.

    ``attention_mask`` is the one passed to the forward call(s) made inside the block. Hooks run before
    any other hook on the layers, so ``output_hidden_states`` returns the filtered states; they are removed
    on exit and the model is then bit-identical to before.
    """
    operators = temporal_operators(attention_mask, cutoff, order, strength)  # the same for every layer

    def low_pass(index: int, hidden: torch.Tensor) -> torch.Tensor:
        return apply_temporal_operators(hidden, attention_mask, operators)

    with map_layer_outputs(model, low_pass, prepend=True):
        yield
