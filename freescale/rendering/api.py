"""`render(config)`: the Python entry point; `render_to_files`: the CLI's, local or on Ray workers."""

from __future__ import annotations

import dataclasses

from PIL import Image

from freescale.config.render_config import RenderConfig
from freescale.models import loading as model_loading
from freescale.models.loading import LoadedModel
from freescale.progress import Progress


def recipe(config: RenderConfig, model_identity: str) -> dict:
    """Everything needed to reproduce an output."""
    from freescale import __version__

    data = dataclasses.asdict(config)
    data["stages"] = [list(s) for s in config.stages]
    data["model_identity"] = model_identity
    data["freescale_version"] = __version__
    return data


def load_model_for(config: RenderConfig) -> LoadedModel:
    source = model_loading.resolve_model_source(config.model, config.model_config)
    return model_loading.load_model(source, config.device, config.dtype)


def render(
    config: RenderConfig, model: LoadedModel | None = None, progress: Progress | None = None
) -> list[Image.Image]:
    """Run the cascade in this process; one PIL image per stage, base first."""
    from freescale.cluster.sharding.shard_group import ShardGroup
    from freescale.rendering.rank_render import assemble, render_on_rank

    model = model or load_model_for(config)
    config = config.replace(bit_depth=8)  # PIL holds 8-bit RGB; 16-bit output is a TIFF-writing option
    stages = list(range(len(config.stages)))
    result = render_on_rank(model, ShardGroup.single(), config, progress, stages)
    return [Image.fromarray(assemble([result], stage)) for stage in stages]


def render_to_files(config: RenderConfig, placement, progress: Progress, checkpoints=None) -> list[str]:
    """Render with one in-process rank or on Ray workers (a `cluster.driver.Placement`), then write
    the outputs atomically; returns the paths written. `checkpoints`: a `checkpoints.CheckpointDir`
    to resume from and keep checkpoints in."""
    from freescale.rendering.renderer import Renderer

    with Renderer(config, placement, progress, checkpoints) as renderer:
        return renderer.render_to_files(config)
