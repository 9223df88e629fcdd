"""diffusers-style pipelines over FreeScale: `FreeScaleXLPipeline.from_pipe(pipe)` takes the user's own
pipeline (its scheduler, fused LoRAs and fine-tuned weights as given) or `.from_pretrained(dir)` loads one;
a call reads like StableDiffusionXLPipeline's and returns every stage's images. A call runs the Renderer on
one in-process rank, the path `freescale render` takes."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from freescale.config.presets import check_values
from freescale.config.render_config import build_config
from freescale.errors import ConfigError
from freescale.models.families import FAMILIES, ModelFamily
from freescale.models.loading import LoadedModel, load_model, resolve_model_source
from freescale.models.native_resolution import native_size_from_configs
from freescale.progress import Progress
from freescale.rendering.renderer import Placement, Renderer

OUTPUT_TYPES = ("pil", "np", "latent")


@dataclass
class FreeScalePipelineOutput:
    """`images`: the last stage's image of each prompt; `stage_images[k]`: stage k's (base first), each as
    `output_type` says (PIL images, float arrays in [0, 1] of shape (H, W, 3), or latent tensors)."""

    images: list
    stage_images: list[list]


class _StepCallback(Progress):
    """diffusers' `callback_on_step_end(pipe, step, timestep, callback_kwargs)` after every step of every
    stage; callback_kwargs holds the stage index (the latents are not passed: on many workers each holds
    only a band). Its return value is not used."""

    def __init__(self, pipeline: Any, callback: Any, timesteps: Any) -> None:
        super().__init__(quiet=True)
        self.pipeline, self.callback, self.timesteps = pipeline, callback, timesteps

    def step(self, stage: int, num_stages: int, step: int, steps: int, first_step: int = 0) -> None:
        timestep = self.timesteps[step]
        self.callback(self.pipeline, step, timestep, {"stage": stage, "num_stages": num_stages})


def render_timesteps(config, model_scheduler: Any) -> Any:
    """The timesteps the render's sampler (--scheduler's, else the model's own) steps through, from a copy
    of it: the callback's `timestep` whichever sampler runs."""
    from freescale.models.schedulers import build_scheduler

    scheduler = build_scheduler(config.scheduler, model_scheduler)
    if scheduler is model_scheduler:
        scheduler = type(scheduler).from_config(scheduler.config)
    scheduler.set_timesteps(config.steps)
    return scheduler.timesteps


class _FreeScalePipeline:
    """One model family's pipeline; subclasses name the diffusers class and the families it takes."""

    pipeline_class: ClassVar[str]
    families: ClassVar[tuple[str, ...]]

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    @property
    def pipe(self):
        """The diffusers pipeline rendered with (the user's own after `from_pipe`)."""
        return self.model.pipe

    @property
    def scheduler(self):
        return self.model.pipe.scheduler

    @classmethod
    def from_pipe(cls, pipe: Any, identity: str | None = None) -> _FreeScalePipeline:
        """Render with `pipe` as it is: its weights, scheduler and device. `identity` names the model in
        recipes (default: the path it was loaded from)."""
        if type(pipe).__name__ != cls.pipeline_class:
            raise TypeError(
                f"{cls.__name__}.from_pipe takes a {cls.pipeline_class}, not {type(pipe).__name__}"
            )
        weight = next(pipe.unet.parameters())
        name = identity or f"pipeline:{getattr(pipe, 'name_or_path', None) or type(pipe).__name__}"
        native = native_size_from_configs(pipe.unet.config, pipe.vae.config)
        model = LoadedModel(pipe, native, name, weight.device, weight.dtype, cls._family_of(pipe))
        return cls(model)

    @classmethod
    def from_pretrained(
        cls, path: str, device: str | None = None, dtype: str | None = None, allow_pickle: bool = False
    ) -> _FreeScalePipeline:
        """Load a model as `--model PATH` does (a diffusers directory, an original .safetensors file or a
        built-in name), offline; `dtype` fp32|fp16|bf16 (default fp16 on CUDA, fp32 on the CPU)."""
        model = load_model(resolve_model_source(path, None, allow_pickle), device, dtype)
        if model.family.name not in cls.families:
            raise ConfigError(f"{path} is a {model.family.description} model; {cls.__name__} takes "
                              f"{', '.join(FAMILIES[f].description for f in cls.families)}")  # fmt: skip
        return cls(model)

    @classmethod
    def _family_of(cls, pipe: Any) -> ModelFamily:
        if len(cls.families) == 1:
            return FAMILIES[cls.families[0]]
        width = pipe.unet.config.cross_attention_dim  # SD2.x conditions on a 1024-wide text encoder
        return FAMILIES["sd21" if width == 1024 else "sd15"]

    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        output_type: str = "pil",
        callback_on_step_end: Any = None,
        image: Image.Image | str | None = None,
        mask: Image.Image | str | None = None,
        **freescale: Any,
    ) -> FreeScalePipelineOutput:
        """Render `prompt` (a list: one render each, seeds seed, seed + 1, ...) at height x width (default:
        --scale 2's size), through FreeScale's stages. `generator`: its initial seed is the seed (FreeScale
        draws every random number from keyed generators of the seed, so they agree on any number of
        workers). The other keywords are FreeScale's settings by their option names (`stages`,
        `cosine_scale`, `fast_mode`, `dilate_tau`, `restart`, `freeu`, `cosine_scale_bg` ...);
        `negative_prompt` None is FreeScale's default negative prompt, as in `freescale render`."""
        if output_type not in OUTPUT_TYPES:
            raise ConfigError(f"output_type {output_type!r} is not one of {', '.join(OUTPUT_TYPES)}")
        if generator is not None and seed is not None:
            raise ConfigError("give a generator or a seed, not both")
        if (height is None) != (width is None):
            raise ConfigError("give height and width together (or neither, for --scale 2's size)")
        check_values(freescale, "the pipeline call")  # unknown or mistyped settings, by their option names
        base_seed = generator.initial_seed() if generator is not None else (seed or 0)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        per_prompt = []
        with tempfile.TemporaryDirectory(prefix="freescale-pipeline-") as folder:
            values = {**freescale, "steps": num_inference_steps, "guidance": guidance_scale,
                      "output": os.path.join(folder, "unwritten.tif")}  # fmt: skip
            if negative_prompt is not None:
                values["negative_prompt"] = negative_prompt
            if height is not None:
                values["size"] = f"{width}x{height}"
            if "stages" in values and not isinstance(values["stages"], str):
                values["stages"] = [_stage_text(s) for s in values["stages"]]
            for key, picture in (("image", image), ("mask", mask)):
                if picture is not None:
                    values[key] = _as_file(picture, os.path.join(folder, f"{key}.png"))
            for index, text in enumerate(prompts):
                config = build_config({**values, "prompt": text, "seed": base_seed + index},
                                      self.model.native_size, family=self.model.family)  # fmt: skip
                per_prompt.append(self._render(config, output_type, callback_on_step_end))
        stage_images = [list(images) for images in zip(*per_prompt, strict=True)]
        return FreeScalePipelineOutput(images=stage_images[-1], stage_images=stage_images)

    def _render(self, config, output_type: str, callback: Any) -> list:
        progress = Progress(quiet=True)
        if callback is not None:
            progress = _StepCallback(self.pipe, callback, render_timesteps(config, self.pipe.scheduler))
        stages = list(range(len(config.stages)))
        if output_type == "pil":
            config = config.replace(bit_depth=8)
        elif output_type == "np":
            config = config.replace(bit_depth=16)  # [0, 1] floats from 16-bit levels, as fine as the VAE's
        with Renderer(config, Placement(), progress, loaded=self.model) as renderer:
            if output_type == "latent":
                return renderer.render_latents(config)
            arrays = renderer.render_arrays(config, stages)
        if output_type == "pil":
            return [Image.fromarray(arrays[stage]) for stage in stages]
        return [arrays[stage].astype(np.float32) / 65535.0 for stage in stages]


def _stage_text(stage: Any) -> str:
    """A stage as `--stages` takes it: an int is square, a (height, width) pair is WIDTHxHEIGHT."""
    if isinstance(stage, int):
        return f"{stage}x{stage}"
    height, width = stage
    return f"{width}x{height}"


def _as_file(picture: Image.Image | str, path: str) -> str:
    """A path for the render's image input: a path as given, a PIL image saved losslessly."""
    if isinstance(picture, str):
        return picture
    picture.save(path)
    return path


class FreeScaleXLPipeline(_FreeScalePipeline):
    """FreeScale over a StableDiffusionXLPipeline."""

    pipeline_class = "StableDiffusionXLPipeline"
    families = ("sdxl",)


class FreeScalePipeline(_FreeScalePipeline):
    """FreeScale over a StableDiffusionPipeline (SD1.x and SD2.x)."""

    pipeline_class = "StableDiffusionPipeline"
    families = ("sd15", "sd21")
