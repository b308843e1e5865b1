"""Which parts of the hybrid model train when: one mechanism for every SASRecLLM schedule.

The hybrid model has three trainable parts -- ``lora`` (the adapter inside the LM), ``projector`` (the
collaborative MLP) and ``collab`` (SASRec). A schedule is a list of :class:`FreezeStage`\\ s, each saying
from which optimizer step on which parts train:

* joint / dual-stage hybrid phase: ``[FreezeStage(0, ("lora", "projector"))]``;
* hierarchical freezing (paper Sec. "Hierarchical Freezing"): LoRA first, then the projector joins, then SASRec:
  ``[FreezeStage(0, ("lora",)), FreezeStage(b1, ("lora", "projector")), FreezeStage(b2, (... "collab"))]``;
* plug-and-play: ``[FreezeStage(0, ("projector",))]``.

Why a callback that flips ``requires_grad`` rather than rebuilding the optimizer: ``Trainer`` creates the
optimizer once, over the parameters that require grad at that moment, and checkpoints/resumes *that*
optimizer. So every part that trains in *some* stage requires grad when the Trainer is built, and the
callback freezes what the current step does not train. A frozen parameter gets no ``.grad`` (the Trainer
zeroes grads to ``None``), and AdamW skips parameters without a gradient -- no update, no moment change,
no weight decay. Because the stage is a function of ``state.global_step`` alone, a resumed run lands in
the same stage as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from torch import nn
from transformers import TrainerCallback

PARTS = ("lora", "projector", "collab")


@dataclass(frozen=True)
class FreezeStage:
    start_step: int
    trainable: tuple[str, ...]

    def __post_init__(self):
        unknown = set(self.trainable) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown trainable part(s) {sorted(unknown)}; choose from {PARTS}")
        if self.start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {self.start_step}")


def hierarchical_stages(projector_from: int, collab_from: int) -> list[FreezeStage]:
    """The paper's hierarchical freezing: LoRA alone, + projector from ``projector_from``, + SASRec from
    ``collab_from`` (optimizer steps)."""
    if not 0 <= projector_from <= collab_from:
        raise ValueError(f"need 0 <= projector_from ({projector_from}) <= collab_from ({collab_from})")
    return [FreezeStage(0, ("lora",)), FreezeStage(projector_from, ("lora", "projector")),
            FreezeStage(collab_from, PARTS)]


class StagedFreezing(TrainerCallback):
    """Sets ``requires_grad`` of each part to the stage of the current ``global_step``."""

    def __init__(self, parts: Mapping[str, Iterable[nn.Parameter]], stages: list[FreezeStage]):
        if not stages or stages[0].start_step != 0:
            raise ValueError("the first stage must start at step 0")
        if any(a.start_step > b.start_step for a, b in zip(stages, stages[1:])):
            raise ValueError(f"stages must be sorted by start_step: {[s.start_step for s in stages]}")
        missing = set(PARTS) - set(parts)
        if missing:
            raise ValueError(f"parts {sorted(missing)} not given")
        self.parts = {name: list(params) for name, params in parts.items()}
        self.stages = list(stages)
        ever_trained = {part for stage in stages for part in stage.trainable}
        for part in ever_trained:
            if not self.parts[part]:
                raise ValueError(f"the schedule trains {part!r} but the model has no such parameters")
        # Everything that ever trains must be in the optimizer, which Trainer builds from requires_grad.
        for name, params in self.parts.items():
            for param in params:
                param.requires_grad_(name in ever_trained)

    def stage_at(self, step: int) -> FreezeStage:
        return [stage for stage in self.stages if stage.start_step <= step][-1]

    def apply(self, step: int) -> FreezeStage:
        stage = self.stage_at(step)
        for name, params in self.parts.items():
            for param in params:
                param.requires_grad_(name in stage.trainable)
        return stage

    def on_train_begin(self, args, state, control, **kwargs):
        self.apply(state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):
        self.apply(state.global_step)


def collaborative_lm_parts(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The three parts of a ``CollaborativeLM``: LoRA parameters (PEFT names them ``lora_*``), the projector,
    and the collaborative model (empty when it has none)."""
    lora = [param for name, param in model.lm.named_parameters() if "lora_" in name]
    collab = list(model.collab_model.parameters()) if model.collab_model is not None else []
    return {"lora": lora, "projector": list(model.projector.parameters()), "collab": collab}
