"""What every rank runs for one render: the cascade on its bands, then its rows of each output image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from freescale.cascade import Cascade
from freescale.checkpoints import CheckpointSink, Snapshot
from freescale.progress import Progress
from freescale.render_config import RenderConfig
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


def render_on_rank(
    model,
    group,
    config: RenderConfig,
    progress: Progress | None = None,
    stages: list[int] | None = None,
    cfg_parallel: bool = False,
    resume: RenderResume | None = None,
) -> dict:
    """Run the cascade; returns this rank's image rows of each stage in `stages` (default: the
    output stages), and on rank 0 every stage's latents. With `cfg_parallel` the ranks form two
    groups, one per half of the guidance batch. `resume` continues from and keeps checkpoints."""
    from freescale.cluster.cfg_split import split_for_cfg
    from freescale.vae_transitions import vae_scale

    with torch.inference_mode():
        resume = resume or RenderResume()
        checkpoints = {
            "snapshot": resume.snapshot,
            "checkpoint_every": resume.every,
            "on_checkpoint": resume.sink,
        }
        if cfg_parallel:
            band_group, cfg = split_for_cfg(group)
            cascade = Cascade(model, config, progress, band_group, cfg, **checkpoints)
        else:
            cascade = Cascade(model, config, progress, group, **checkpoints)
        latents = cascade.run()
        scale = vae_scale(model.pipe.vae)
        images: dict[int, np.ndarray] = {}
        for stage in output_stages(config) if stages is None else stages:
            bands = pixel_bands(config, stage, group.world, scale)
            if group.rank < len(bands):
                images[stage] = cascade.image_rows(latents[stage], bands[group.rank])
    return {"images": images, "latents": [t.cpu() for t in latents] if group.rank == 0 else None}


def render_on_worker(
    state, config: RenderConfig, cfg_parallel: bool = False, resume: RenderResume | None = None
) -> dict:
    """Entry point on a Ray worker (`WorkerPool.run`): rank 0 reports progress as plain log lines."""
    progress = Progress(quiet=state.rank != 0)
    return render_on_rank(
        state.model, state.group, config, progress, cfg_parallel=cfg_parallel, resume=resume
    )


def assemble(results: list[dict], stage: int) -> np.ndarray:
    """Stack the ranks' rows of one stage's image, in rank order."""
    return np.concatenate([r["images"][stage] for r in results if stage in r["images"]], axis=0)
