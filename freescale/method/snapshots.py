"""How far a render got and what a rank hands over at a checkpoint: the method's side of checkpoints
(the files are `outputs.checkpoints`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# Schedulers whose step i depends only on (latents, prediction, i): a mid-stage checkpoint resumes them
# exactly. Multistep solvers keep earlier predictions; for them only stage ends are checkpoints.
STATELESS_SCHEDULERS = ("EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "DDIMScheduler")


@dataclass(frozen=True)
class Snapshot:
    """How far a render got: finished stages' latents, and optionally the stage in progress."""

    finished: tuple[torch.Tensor, ...] = ()
    step: int | None = None  # next step of stage len(finished) to run, when latents is set
    latents: torch.Tensor | None = None  # that stage's whole latents before `step`

    def describe(self) -> str:
        if self.latents is not None:
            return f"stage {len(self.finished) + 1} step {self.step}"
        return f"the start of stage {len(self.finished) + 1}"


@dataclass(frozen=True)
class CheckpointEvent:
    """What a rank hands to whoever keeps the checkpoints: a stage's end, or a step inside it."""

    stage: int
    latents: torch.Tensor  # whole latents, on the CPU
    step: int | None = None  # None: stage finished; else the next step to run
    chunk: int | None = None  # of a long clip's chunks, the one it belongs to


CheckpointSink = Callable[[CheckpointEvent], None]


def supports_mid_stage(scheduler) -> bool:
    return type(scheduler).__name__ in STATELESS_SCHEDULERS
