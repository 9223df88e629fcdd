"""How a long clip's chunks go over the workers (frames x bands): G groups of workers / G, each rendering one
chunk at a time sharded in row bands; the split whose estimate finishes first, among those that fit."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

from freescale.config.render_config import RenderConfig
from freescale.planning.plan import Plan, plan_request
from freescale.tiling.frame_chunks import frame_chunks


@dataclass(frozen=True)
class FrameSplit:
    groups: int  # chunks rendered at once
    bands: int  # workers per chunk
    rounds: int  # chunk renders one after another
    seconds: float  # the cost model's estimate of all of them
    chunks: int

    def describe(self) -> str:
        per = f"{self.bands} worker{'s' if self.bands > 1 else ''}"
        return (f"frames x bands: {self.groups} x {self.bands} ({self.chunks} chunks, {self.groups} at a "
                f"time, each on {per}; about {self.seconds:.0f}s by the cost model)")  # fmt: skip


def frame_split(plan: Plan, chunks: int, memory_bytes: float | None = None) -> FrameSplit:
    """The split of `plan`'s workers (the plan of one chunk on all of them) for `chunks` chunks: every
    G dividing the workers, no more than the chunks, whose per-worker estimate fits `memory_bytes`; the
    soonest done, the fewer groups on a tie. With --cfg-parallel the chunks are not split (one group)."""
    r = plan.request
    options = []
    for groups in range(1, min(r.workers, chunks) + 1):
        if r.workers % groups or (groups > 1 and r.cfg_parallel):
            continue
        bands = r.workers // groups
        chunk = plan if bands == r.workers else _replanned(plan, bands)
        if groups > 1 and memory_bytes is not None and chunk.peak_bytes > memory_bytes:
            continue
        rounds = math.ceil(chunks / groups)
        options.append(FrameSplit(groups, bands, rounds, rounds * chunk.total_s, chunks))
    return min(options, key=lambda s: (s.seconds, s.groups))


def clip_frame_groups(
    config: RenderConfig, plan: Plan, memory_bytes: float | None, note: Callable[[str], None]
) -> int:
    """How many of a video render's chunks render at once on `plan`'s workers, the choice told to `note`;
    1 when there is nothing to split (an image, a clip of one chunk, one worker)."""
    if not config.is_video or plan.request.workers < 2:
        return 1
    chunks = len(frame_chunks(config.frames, config.chunk_frames, config.chunk_overlap))
    if chunks < 2:
        return 1
    split = frame_split(plan, chunks, memory_bytes)
    note(split.describe())
    return split.groups


def _replanned(plan: Plan, workers: int) -> Plan:
    request = dataclasses.replace(plan.request, workers=workers)
    return plan_request(request, plan.model, plan.device, plan.link)
