"""The sampler's step on one rank's row band, chosen by scheduler type: every random draw is of the whole
latent tensor, keyed by (seed, stage, step), and each rank keeps its rows, so N ranks equal one.

Every scheduler here is elementwise in the latents (no norm, quantile or sum over positions), so a band's
step, and a multistep solver's history of it, is the scheduler's step on that band's tensor. Dynamic
thresholding (a quantile over each whole image) is not, and is refused on more than one rank.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from freescale.errors import ConfigError
from freescale.method.random_draws import keyed_generator, keyed_normal
from freescale.models.schedulers import SCHEDULER_NAMES

_PURPOSE = "sampler"


@dataclass(frozen=True)
class StepDraw:
    """What step `step`'s noise is keyed by, and where this rank's rows (dim -2) lie in the whole latent."""

    seed: int
    stage: int
    step: int
    band: tuple[int, int]
    rows: int

    @property
    def is_whole(self) -> bool:
        return self.band == (0, self.rows)

    def generator(self) -> torch.Generator:
        return keyed_generator(self.seed, _PURPOSE, self.stage, self.step)

    def whole_shape(self, band_latents: torch.Tensor) -> tuple[int, ...]:
        return (*band_latents.shape[:-2], self.rows, band_latents.shape[-1])


class PlainStep:
    """A deterministic scheduler: its step on the band. It is given the keyed generator where its step
    takes one, so that nothing it might draw comes from a global RNG (Euler draws only with s_churn > 0,
    DDIM only with eta > 0; neither is ever passed)."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.takes_generator = "generator" in inspect.signature(scheduler.step).parameters

    def __call__(self, eps: torch.Tensor, t, latents: torch.Tensor, draw: StepDraw) -> torch.Tensor:
        extra = {"generator": draw.generator()} if self.takes_generator else {}
        return self.scheduler.step(eps, t, latents, **extra, return_dict=False)[0]


class WholeTensorNoiseStep:
    """A stateless ancestral scheduler that draws `randn(model_output.shape, generator)` inside its step
    and takes no noise from outside: it steps the whole latent, this band placed in zeros, with the keyed
    generator, and keeps the band: the very draw and arithmetic of one rank, at the price of elementwise
    work on the whole latent (16 MB at 8k)."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def __call__(self, eps: torch.Tensor, t, latents: torch.Tensor, draw: StepDraw) -> torch.Tensor:
        if draw.is_whole:
            return self.scheduler.step(eps, t, latents, generator=draw.generator(), return_dict=False)[0]
        a, b = draw.band
        whole_eps = eps.new_zeros(draw.whole_shape(eps))
        whole_eps[..., a:b, :] = eps
        whole_latents = latents.new_zeros(draw.whole_shape(latents))
        whole_latents[..., a:b, :] = latents
        stepped = self.scheduler.step(
            whole_eps, t, whole_latents, generator=draw.generator(), return_dict=False
        )[0]
        return stepped[..., a:b, :]


class VarianceNoiseStep:
    """A scheduler whose step takes its noise as `variance_noise` (DPM-Solver's SDE variants): the whole
    latent's keyed draw (fp32, as it would draw itself), this band's rows of it."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def __call__(self, eps: torch.Tensor, t, latents: torch.Tensor, draw: StepDraw) -> torch.Tensor:
        a, b = draw.band
        noise = keyed_normal(draw.whole_shape(eps), draw.seed, _PURPOSE, draw.stage, draw.step)[..., a:b, :]
        noise = noise.to(eps.device)
        return self.scheduler.step(eps, t, latents, variance_noise=noise, return_dict=False)[0]


BandStep = PlainStep | WholeTensorNoiseStep | VarianceNoiseStep

# Exact types: a subclass may step differently. PNDM is SD1.x's own scheduler.
_STEPS: dict[type, type[BandStep]] = {
    EulerDiscreteScheduler: PlainStep,
    DDIMScheduler: PlainStep,
    UniPCMultistepScheduler: PlainStep,
    PNDMScheduler: PlainStep,
    EulerAncestralDiscreteScheduler: WholeTensorNoiseStep,
}
_SDE_ALGORITHMS = ("sde-dpmsolver", "sde-dpmsolver++")


def _step_kind(scheduler) -> type[BandStep] | None:
    if type(scheduler) is DPMSolverMultistepScheduler:
        return VarianceNoiseStep if scheduler.config.algorithm_type in _SDE_ALGORITHMS else PlainStep
    return _STEPS.get(type(scheduler))


def band_step(scheduler, world: int) -> BandStep:
    """How a rank of `world` ranks steps `scheduler` on its band. One rank steps any scheduler as diffusers
    does; more refuse one that is not known to be exact on bands (an unknown type, or thresholding)."""
    name = type(scheduler).__name__
    kind = _step_kind(scheduler)
    if world > 1 and kind is None:
        raise ConfigError(
            f"the scheduler {name} is not known to give the same result sharded over {world} workers; "
            f"choose --scheduler {' | '.join(SCHEDULER_NAMES)}, or use one worker"
        )
    if world > 1 and getattr(scheduler.config, "thresholding", False):
        raise ConfigError(
            f"the scheduler {name} has dynamic thresholding on (a quantile over the whole image), which "
            f"differs when the latents are split over {world} workers; turn it off or use one worker"
        )
    return (kind or PlainStep)(scheduler)
