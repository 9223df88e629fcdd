"""`render(config)`: the Python entry point, and the output step shared with the CLI."""

from __future__ import annotations

import dataclasses

import torch
from PIL import Image

from freescale.cascade import Cascade
from freescale.image_output import save_image, stage_path
from freescale.model_loading import LoadedModel, load_model, resolve_model_source
from freescale.progress import Progress
from freescale.render_config import RenderConfig


def recipe(config: RenderConfig, model: LoadedModel) -> dict:
    """Everything needed to reproduce an output."""
    from freescale import __version__

    data = dataclasses.asdict(config)
    data["stages"] = [list(s) for s in config.stages]
    data["model_identity"] = model.identity
    data["freescale_version"] = __version__
    return data


def load_model_for(config: RenderConfig) -> LoadedModel:
    return load_model(resolve_model_source(config.model, config.model_config), config.device, config.dtype)


def render(
    config: RenderConfig, model: LoadedModel | None = None, progress: Progress | None = None
) -> list[Image.Image]:
    """Run the cascade; one PIL image per stage, base first."""
    model = model or load_model_for(config)
    with torch.inference_mode():
        cascade = Cascade(model, config, progress)
        latents = cascade.run()
        return [
            Image.fromarray(cascade.image_rows(lat, (0, size[0])))
            for lat, size in zip(latents, config.stages, strict=True)
        ]


def render_to_files(config: RenderConfig, model: LoadedModel, progress: Progress) -> list[str]:
    """Render and write the final image (and every stage with save_stages); returns the paths written."""
    with torch.inference_mode():
        cascade = Cascade(model, config, progress)
        latents = cascade.run()
        data = recipe(config, model)
        written = []
        last = len(latents) - 1
        for stage, stage_latents in enumerate(latents):
            if stage < last and not config.save_stages:
                continue
            path = config.output if stage == last else stage_path(config.output, stage, config.stages[stage])
            progress.note(f"writing {path}")
            image = Image.fromarray(cascade.image_rows(stage_latents, (0, config.stages[stage][0])))
            save_image(image, path, config.overwrite, {**data, "stage": stage})
            written.append(path)
    return written
