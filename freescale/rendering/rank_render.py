"""What every rank runs for one render: the cascade on its bands, then its rows of each output image,
decoded strip by strip as the VAE tiles come."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from freescale.config.render_config import RenderConfig
from freescale.method.cascade import Cascade
from freescale.method.snapshots import CheckpointSink, Snapshot
from freescale.progress import Progress
from freescale.tiling.bands import row_bands


@dataclass(frozen=True)
class RenderResume:
    """Where a render starts (a checkpoint's snapshot) and where its checkpoints go (`sink`, called on
    world rank 0 only; on Ray workers it puts them in the driver's queue). `every`: steps between
    mid-stage checkpoints; None keeps none."""

    snapshot: Snapshot | None = None
    every: int | None = None
    sink: CheckpointSink | None = None


def output_stages(config: RenderConfig) -> list[int]:
    """The stages written to disk: the last, and all of them with save_stages."""
    last = len(config.stages) - 1
    return list(range(last + 1)) if config.save_stages else [last]


def pixel_bands(config: RenderConfig, stage: int, world: int, vae_scale: int) -> list[tuple[int, int]]:
    """Image rows each rank decodes: whole latent rows, as even as possible."""
    latent_rows = config.stages[stage][0] // vae_scale
    return [(a * vae_scale, b * vae_scale) for a, b in row_bands(latent_rows, min(world, latent_rows), 1)]


def render_latents(
    model,
    group,
    config: RenderConfig,
    progress: Progress | None = None,
    cfg_parallel: bool = False,
    resume: RenderResume | None = None,
) -> list[torch.Tensor]:
    """Run the cascade; every stage's whole latents, the same on every rank. With `cfg_parallel` the
    ranks form two groups, one per half of the guidance batch. `resume` continues from and keeps
    checkpoints."""
    from freescale.cluster.sharding.cfg_split import split_for_cfg

    resume = resume or RenderResume()
    checkpoints = {
        "snapshot": resume.snapshot,
        "checkpoint_every": resume.every,
        "on_checkpoint": resume.sink,
    }
    with torch.inference_mode():
        if cfg_parallel:
            band_group, cfg = split_for_cfg(group)
            return Cascade(model, config, progress, band_group, cfg, **checkpoints).run()
        return Cascade(model, config, progress, group, **checkpoints).run()


def output_strips(
    model, config: RenderConfig, latents: torch.Tensor, rows: tuple[int, int]
) -> Iterator[np.ndarray]:
    """Pixel strips (n, W, 3) of image rows `rows` of a stage with these whole latents, at the config's
    bit depth, each yielded as soon as its VAE tile row is decoded."""
    from freescale.method.vae_transitions import pixel_strips

    with torch.inference_mode():
        yield from pixel_strips(model.pipe.vae, latents, rows, config.bit_depth)


def render_on_rank(
    model,
    group,
    config: RenderConfig,
    progress: Progress | None = None,
    stages: list[int] | None = None,
    cfg_parallel: bool = False,
    resume: RenderResume | None = None,
) -> dict:
    """`render_latents`, then this rank's image rows of each stage in `stages` (default: the output
    stages) as whole arrays; rank 0 also returns every stage's latents."""
    from freescale.method.vae_transitions import vae_scale

    latents = render_latents(model, group, config, progress, cfg_parallel, resume)
    scale = vae_scale(model.pipe.vae)
    images: dict[int, np.ndarray] = {}
    for stage in output_stages(config) if stages is None else stages:
        bands = pixel_bands(config, stage, group.world, scale)
        if group.rank < len(bands):
            images[stage] = np.concatenate(
                list(output_strips(model, config, latents[stage], bands[group.rank]))
            )
    return {"images": images, "latents": [t.cpu() for t in latents] if group.rank == 0 else None}


def render_on_worker(
    state, config: RenderConfig, cfg_parallel: bool = False, resume: RenderResume | None = None
) -> dict:
    """Entry point on a Ray worker (`WorkerPool.run`): render, then decode this rank's rows of each
    output stage into strips that stay on the worker until the driver takes them (`take_strip`), so
    the driver holds one strip at a time. Returns the strip count per stage (and, from rank 0, the
    latents). Rank 0 reports progress as plain log lines."""
    from freescale.method.vae_transitions import vae_scale

    progress = Progress(quiet=state.rank != 0)
    latents = render_latents(state.model, state.group, config, progress, cfg_parallel, resume)
    scale = vae_scale(state.model.pipe.vae)
    state.held = {}
    for stage in output_stages(config):
        bands = pixel_bands(config, stage, state.world, scale)
        if state.rank < len(bands):
            state.held[stage] = deque(output_strips(state.model, config, latents[stage], bands[state.rank]))
    return {
        "strips": {stage: len(strips) for stage, strips in state.held.items()},
        "latents": [t.cpu() for t in latents] if state.rank == 0 else None,
    }


def take_strip(state, stage: int) -> np.ndarray:
    """The next of this rank's strips of a stage's image (see `render_on_worker`)."""
    return state.held[stage].popleft()


def assemble(results: list[dict], stage: int) -> np.ndarray:
    """Stack the ranks' rows of one stage's image, in rank order."""
    return np.concatenate([r["images"][stage] for r in results if stage in r["images"]], axis=0)
