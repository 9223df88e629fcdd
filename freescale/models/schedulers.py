"""The samplers `--scheduler` names, each a diffusers scheduler built from the model's own scheduler config
(its noise schedule, timestep spacing and prediction type) with the options that make it that sampler."""

from __future__ import annotations

from typing import Any

# Names only, so that the option definition (and the CLI's help) needs no diffusers import.
SCHEDULER_NAMES = ("euler", "euler-a", "dpm++2m", "dpm++2m-karras", "ddim", "unipc")

# Plain sigma spacing: a model config asking for another (Karras, exponential, beta) does not leak into a
# sampler whose name says plain (diffusers refuses two at once).
_PLAIN_SIGMAS = {"use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False}
_KARRAS_SIGMAS = {**_PLAIN_SIGMAS, "use_karras_sigmas": True}
_DPM_PLUS_PLUS_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2}

# name -> (diffusers class name, options over the model's config); a config key the options name wins.
_SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", _PLAIN_SIGMAS),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {**_DPM_PLUS_PLUS_2M, **_PLAIN_SIGMAS}),
    "dpm++2m-karras": ("DPMSolverMultistepScheduler", {**_DPM_PLUS_PLUS_2M, **_KARRAS_SIGMAS}),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {"solver_order": 2, "predict_x0": True, **_PLAIN_SIGMAS}),
}
# Options taken from the model's config when it has them, else these: DDIM's own default clips x0 to
# [-1, 1], which is for pixel-space models and wrong for latents (SD and SDXL configs say false).
_UNLESS_CONFIGURED: dict[str, dict[str, Any]] = {"ddim": {"clip_sample": False}}


def scheduler_class_name(name: str) -> str:
    return _SAMPLERS[name][0]


def build_scheduler(name: str | None, model_scheduler: Any) -> Any:
    """A fresh scheduler of sampler `name` over `model_scheduler`'s config; None: `model_scheduler` itself
    (the model's own sampler, exactly as before)."""
    if name is None:
        return model_scheduler
    if name not in _SAMPLERS:
        raise ValueError(f"unknown scheduler {name!r}; names: {', '.join(SCHEDULER_NAMES)}")
    import diffusers

    class_name, options = _SAMPLERS[name]
    config = dict(model_scheduler.config)
    defaults = {k: v for k, v in _UNLESS_CONFIGURED.get(name, {}).items() if k not in config}
    return getattr(diffusers, class_name).from_config(config, **defaults, **options)
