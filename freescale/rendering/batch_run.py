"""Running a batch's validated jobs on one warm pool of workers: short jobs side by side, one per group of
workers, when the cost model (or --jobs-at-once) says that is sooner; the others one after another on all
the workers, a long clip's chunks split over them (frames x bands)."""

from __future__ import annotations

import time

from freescale.config.render_config import RenderConfig
from freescale.planning.frame_split import clip_frame_groups
from freescale.planning.job_split import JobSplit, job_split
from freescale.planning.plan import Plan
from freescale.progress import Progress
from freescale.rendering.batch import BatchItem, job_message
from freescale.rendering.renderer import Placement, Renderer
from freescale.tiling.frame_chunks import frame_chunks


def renders_side_by_side(config: RenderConfig) -> bool:
    """An image, or a clip of one chunk: a job a group of workers renders whole (a longer clip's chunks
    are already split over the workers)."""
    if not config.is_video:
        return True
    return len(frame_chunks(config.frames, config.chunk_frames, config.chunk_overlap)) == 1


def split_jobs(
    items: list[BatchItem],
    placement: Placement,
    plans: dict[int, Plan],
    memory_bytes: float | None,
    jobs_at_once: int | None = None,
) -> tuple[list[BatchItem], JobSplit | None]:
    """The pending items that could render side by side, and the split of the workers the cost model (or
    the user) picks for them (None: one worker, or no such item). With a split of one group they too
    render one by one on all the workers."""
    able = [i for i in items if i.status == "pending" and i.index in plans and renders_side_by_side(i.config)]
    if placement.workers < 2 or not able:
        return [], None
    return able, job_split([plans[i.index] for i in able], memory_bytes, jobs_at_once)


def run_items(
    items: list[BatchItem],
    placement: Placement,
    progress: Progress,
    plans: dict[int, Plan] | None = None,
    memory_bytes: float | None = None,
    jobs_at_once: int | None = None,
) -> None:
    """Render the pending items on one warm Renderer: those `split_jobs` picks side by side, in rounds,
    then the rest one by one. `plans`: each item's plan on all the workers (by item index), for the cost
    model's choices; without them every item renders on all the workers. A lost worker is retried by the
    renderer itself (up to the placement's max_retries); an item that still fails, for any reason, is
    reported and the next one starts (on a fresh pool after a lost worker)."""
    pending = [item for item in items if item.status == "pending"]
    if not pending:
        return
    plans = plans or {}
    able, split = split_jobs(pending, placement, plans, memory_bytes, jobs_at_once)
    if split is not None:
        progress.note(split.describe(len(able)))
    groups = split.groups if split is not None else 1
    side = able if groups > 1 else []
    with Renderer(pending[0].config, placement, progress) as renderer:
        for start in range(0, len(side), groups):
            _run_round(renderer, side[start : start + groups], groups, progress)
        for item in pending:
            if item not in side:
                plan, note = plans.get(item.index), progress.note
                groups = 1 if plan is None else clip_frame_groups(item.config, plan, memory_bytes, note)
                _run_one(renderer, item, groups, progress)


def _run_one(renderer: Renderer, item: BatchItem, frame_groups: int, progress: Progress) -> None:
    progress.note(f"batch item {item.index}: {item.output}")
    started = time.monotonic()
    try:
        renderer.render_to_files(item.config, frame_groups)
        _done(item, time.monotonic() - started)
    except Exception as exc:  # one job's failure is reported, the others run
        item.status, item.message = "failed", job_message(exc)


def _run_round(renderer: Renderer, items: list[BatchItem], groups: int, progress: Progress) -> None:
    """Up to `groups` items at once. When one fails on its ranks the whole round does (its results are
    lost with the pool), so each is rendered again on its own, where a failure is its alone."""
    names = ", ".join(str(item.index) for item in items)
    which = f"batch item{'s' if len(items) > 1 else ''} {names}"
    progress.note(f"side by side: {which} ({', '.join(item.output for item in items)})")
    started = time.monotonic()
    try:
        errors = renderer.render_side_by_side([item.config for item in items], groups)
    except Exception as exc:
        progress.note(f"side by side failed ({job_message(exc)}); rendering items {names} one at a time")
        for item in items:
            _run_one(renderer, item, 1, progress)
        return
    share = (time.monotonic() - started) / len(items)  # so that the items' seconds add up to wall time
    for item, error in zip(items, errors, strict=True):
        if error is None:
            _done(item, share)
        else:
            item.status, item.message = "failed", job_message(error)


def _done(item: BatchItem, seconds: float) -> None:
    item.status, item.seconds = "done", seconds
    item.frames = item.config.frames if item.config.is_video else 0
