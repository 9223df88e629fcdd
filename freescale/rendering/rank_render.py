"""What every rank runs for one render, in the driver's process or on a Ray worker alike: the cascade on
its bands, then its rows of each output image as pixel strips, kept for the driver to fetch in order."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from freescale.cluster.sharding.rank_state import RankState
from freescale.config.render_config import RenderConfig
from freescale.errors import ConfigError
from freescale.method.cascade import Cascade
from freescale.method.snapshots import CheckpointEvent, CheckpointSink, Snapshot
from freescale.method.vae_fallback import TileReport
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


def motion_unet_of(state: RankState, config: RenderConfig):
    """The motion UNet of a video render (the rank's image UNet and the config's adapter), built once per
    adapter and kept on the rank; None for an image render."""
    from freescale.cluster.sharding.band_ops import unsharded
    from freescale.models.motion_adapter import load_motion_adapter, motion_unet

    if not config.is_video:
        return None
    if state.motion_unet is None or state.motion_unet[0] != config.motion_adapter:
        state.motion_unet = None  # free the previous one first
        model = state.model
        adapter = load_motion_adapter(config.motion_adapter, model.family.name, config.allow_pickle)
        table = adapter.config.motion_max_seq_length  # a pickle's is known only now
        if config.window > table:
            raise ConfigError(f"--window {config.window} is more than the motion adapter's positional "
                              f"table of {table} frames")  # fmt: skip
        with unsharded(model.pipe.unet):  # after an image render its layers are band versions
            state.motion_unet = (config.motion_adapter, motion_unet(model, adapter))
    return state.motion_unet[1]


def render_latents(
    model,
    group,
    config: RenderConfig,
    progress: Progress,
    cfg_parallel: bool,
    resume: RenderResume,
    unet=None,
    frames: range | None = None,
) -> list[torch.Tensor]:
    """Run the cascade (on `unet`, default the pipeline's; for a video, on its frames `frames`, default
    all); every stage's whole latents, the same on every rank. With `cfg_parallel` the ranks form two
    groups, one per half of the guidance batch."""
    from freescale.cluster.sharding.cfg_split import split_for_cfg

    checkpoints = {
        "snapshot": resume.snapshot,
        "checkpoint_every": resume.every,
        "on_checkpoint": resume.sink,
        "unet": unet,
        "frame_range": frames,
    }
    with torch.inference_mode():
        if cfg_parallel:
            band_group, cfg = split_for_cfg(group)
            return Cascade(model, config, progress, band_group, cfg, **checkpoints).run()
        return Cascade(model, config, progress, group, **checkpoints).run()


def _strips(
    model,
    config: RenderConfig,
    latents: torch.Tensor,
    rows: tuple[int, int],
    report: TileReport | None = None,
) -> Iterator[np.ndarray]:
    """Pixel strips (n, W, 3) of image rows `rows` of a stage (a video's frame) with these whole latents,
    at the config's bit depth, each yielded as soon as its VAE tile row is decoded."""
    from freescale.method.vae_transitions import pixel_strips

    with torch.inference_mode():
        yield from pixel_strips(model.pipe.vae, latents, rows, config.bit_depth, report)


@dataclass(frozen=True)
class ClipChunk:
    """A chunk of a long clip for one group of ranks: its index (for its checkpoints), its frames [first,
    last) and the snapshot it starts from."""

    index: int
    frames: tuple[int, int]
    snapshot: Snapshot | None = None


def _chunk_of(state: RankState, resume: RenderResume, chunks: tuple[ClipChunk, ...], groups: int):
    """This rank's band group, frames and resume for its group's chunk (None when its group has none)."""
    from freescale.cluster.sharding.rank_groups import split_into_groups

    index, group = split_into_groups(state.group, groups)
    if index >= len(chunks):
        return group, None, resume
    chunk, sink = chunks[index], resume.sink

    def tagged(event: CheckpointEvent) -> None:
        sink(dataclasses.replace(event, chunk=chunk.index))

    mine = RenderResume(chunk.snapshot, resume.every, tagged if sink is not None else None)
    return group, range(*chunk.frames), mine


def render_on_rank(
    state: RankState,
    config: RenderConfig | None,
    cfg_parallel: bool = False,
    resume: RenderResume | None = None,
    stages: list[int] | None = None,
    quiet: bool = False,
    chunks: tuple[ClipChunk, ...] = (),
    groups: int = 1,
) -> dict:
    """The rank entry point (`pool.run(render_on_rank, ...)`): render, then this rank's rows of each of
    `stages` (default: the output stages) as strips kept on the rank until the driver takes them with
    `take_strip`, in order. Returns, from rank 0, every stage's latents.

    With `groups` > 1 the ranks form that many equal groups, each rendering its own work sharded over its
    ranks: with `chunks`, group g renders chunks[g] of the clip (none if there are fewer); without, each
    group renders the config its ranks are given (`pool.run(..., per_rank_args=...)`: a batch's jobs side
    by side; None for a group with no job). A video renders all its frames, or a chunk's, its strips held
    under (stage, frame in the clip). Progress goes to the state's own reporter (the driver's, in its
    process); else rank 0 prints plain lines (its own group's), which Ray forwards to the driver's log,
    unless `quiet`."""
    from freescale.cluster.sharding.rank_groups import split_into_groups
    from freescale.method.vae_transitions import vae_scale

    state.held = {}
    resume, group, frames = resume or RenderResume(), state.group, None
    if groups > 1 and not chunks:
        group = split_into_groups(state.group, groups)[1]
    if config is None:
        return {"latents": None}  # no job for this group
    progress = state.progress or Progress(quiet=quiet or state.rank != 0, warnings=not quiet)
    unet = motion_unet_of(state, config)
    if config.is_video:
        frames = range(config.frames)
        if chunks:
            group, frames, resume = _chunk_of(state, resume, chunks, groups)
    if frames is None and config.is_video:
        return {"latents": None}  # no chunk for this group in this round
    latents = render_latents(state.model, group, config, progress, cfg_parallel, resume, unet, frames)
    scale = vae_scale(state.model.pipe.vae)
    for stage in output_stages(config) if stages is None else stages:
        bands = pixel_bands(config, stage, group.world, scale)
        if group.rank >= len(bands):
            continue
        # An image's strips are held under its stage; a video's under (stage, frame), frame by frame.
        parts = [(stage, latents[stage])]
        if config.is_video:
            parts = [((stage, f), latents[stage][:, :, i]) for i, f in enumerate(frames)]
        for key, frame_latents in parts:
            report = TileReport(stage, key[1] if config.is_video else None, progress.warn)
            strips = _strips(state.model, config, frame_latents, bands[group.rank], report)
            # One rank decodes as the driver writes, so the image is never held whole; many ranks decode
            # their rows at once while the driver fetches them one rank at a time.
            state.held[key] = strips if state.world == 1 else iter(list(strips))
    return {"latents": [t.cpu() for t in latents] if state.rank == 0 else None}


def take_strip(state: RankState, key: int | tuple[int, int]) -> np.ndarray | None:
    """The next of this rank's strips of a stage's image, or with key (stage, frame) of a video's frame
    (see `render_on_rank`); None after the last, or when this rank holds no rows of it."""
    strip = next(state.held.get(key, iter(())), None)
    if strip is None:
        state.held.pop(key, None)  # drop a finished image's iterator (and the decoder state it keeps)
    return strip
