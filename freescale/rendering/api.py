"""`render(config)`: the Python entry point; `render_to_files`: the CLI's. Both run on a `Renderer`, so
the Python API, the CLI and Ray renders share one rank path."""

from __future__ import annotations

from PIL import Image

from freescale.config.render_config import RenderConfig
from freescale.models.loading import LoadedModel
from freescale.outputs.checkpoints import CheckpointDir
from freescale.progress import Progress
from freescale.rendering.renderer import Placement, Renderer


def render(
    config: RenderConfig, model: LoadedModel | None = None, progress: Progress | None = None
) -> list[Image.Image]:
    """Run the cascade in this process; one PIL image per stage, base first."""
    config = config.replace(bit_depth=8)  # PIL holds 8-bit RGB; 16-bit output is a TIFF-writing option
    stages = list(range(len(config.stages)))
    with Renderer(config, Placement(), progress or Progress(quiet=True), loaded=model) as renderer:
        arrays = renderer.render_arrays(config, stages)
    return [Image.fromarray(arrays[stage]) for stage in stages]


def render_to_files(
    config: RenderConfig,
    placement: Placement,
    progress: Progress,
    checkpoints: CheckpointDir | None = None,
    frame_groups: int = 1,
) -> list[str]:
    """Render with one in-process rank or on Ray workers, then write the outputs atomically; returns the
    paths written. `checkpoints`: where to resume from and keep checkpoints; `frame_groups`: a long clip's
    chunks rendered at once (frames x bands)."""
    with Renderer(config, placement, progress, checkpoints) as renderer:
        return renderer.render_to_files(config, frame_groups)
