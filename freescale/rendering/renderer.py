"""The driver: keep the model warm on a pool of ranks (one in this process, or Ray workers), run renders
sharded over all of them, and write the outputs strip by strip as the ranks' rows arrive.

Reads top to bottom: `Renderer` starts the pool once (model loaded once per rank); each
`render_to_files(config)` has every rank run `render_on_rank` (resuming from checkpoints after a lost
worker), then streams each output image into its file, fetching one strip at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from freescale.cluster.ray.worker_pool import WorkerLost, WorkerPool
from freescale.config.render_config import RenderConfig
from freescale.method.snapshots import CheckpointEvent, Snapshot
from freescale.models.loading import LoadedModel
from freescale.outputs.checkpoints import CheckpointDir
from freescale.outputs.fitted_strips import fitted
from freescale.outputs.image_output import OutputOptions, stage_path
from freescale.outputs.streaming_output import write_image_strips
from freescale.outputs.upscale_output import finished
from freescale.progress import Progress
from freescale.rendering.in_process_pool import InProcessPool
from freescale.rendering.rank_render import (
    ClipChunk,
    RenderResume,
    output_stages,
    render_on_rank,
    take_strip,
)
from freescale.tiling.frame_chunks import crossfade_weights, frame_chunks

T = TypeVar("T")


@dataclass(frozen=True)
class Placement:
    """Where renders run: one rank in this process, or `workers` Ray actors; how often a render whose
    worker died is retried on fresh workers (from its last checkpoint, if it keeps any)."""

    workers: int = 1
    address: str | None = None
    strategy: str = "PACK"
    cfg_parallel: bool = False
    max_retries: int = 0

    @property
    def in_process(self) -> bool:
        return self.workers == 1 and self.address is None and not self.cfg_parallel


def recipe(config: RenderConfig, model_identity: str) -> dict:
    """Everything needed to reproduce an output."""
    from freescale import __version__

    data = dataclasses.asdict(config)
    data["stages"] = [list(s) for s in config.stages]
    data["model_identity"] = model_identity
    data["freescale_version"] = __version__
    return data


class Renderer:
    """A warm model for many renders of the same model: `with Renderer(...) as r: r.render_to_files(c)`."""

    def __init__(
        self,
        model_config: RenderConfig,
        placement: Placement,
        progress: Progress,
        checkpoints: CheckpointDir | None = None,
        loaded: LoadedModel | None = None,
    ):
        self.model_config = model_config  # only its model, model_config, device and dtype are used
        self.placement = placement
        self.progress = progress
        self.checkpoints = checkpoints
        self.loaded = loaded  # a model already in this process (in-process placements only)
        self.pool: InProcessPool | WorkerPool | None = None
        self.identity = ""
        self._lost = False  # the pool lost a worker; the next render starts a fresh one

    def __enter__(self) -> Renderer:
        c, p = self.model_config, self.placement
        if p.in_process:
            self.pool = InProcessPool(
                c.model, c.model_config, c.device, c.dtype, self.progress, self.loaded, c.allow_pickle, c.lora
            )
        else:
            self.progress.note(f"starting {p.workers} workers")
            self.pool = WorkerPool(
                p.workers, model=c.model, model_config=c.model_config, device=c.device, dtype=c.dtype,
                strategy=p.strategy, address=p.address, allow_pickle=c.allow_pickle, lora=c.lora,
            )  # fmt: skip
        self.pool.start()  # cleans up after itself if it fails
        try:
            self.identity = self.pool.run(_model_identity)[0]
        except BaseException:
            self.pool.shutdown()
            raise
        self._note_ready()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def _note_ready(self) -> None:
        if isinstance(self.pool, WorkerPool):
            self.progress.note(f"{self.pool.world} workers ready ({self.pool.backend})")

    def render_to_files(self, config: RenderConfig, frame_groups: int = 1) -> list[str]:
        """Render, then write the outputs strip by strip (the driver holds one strip and the writer's
        buffer, never the image); returns the paths written. `frame_groups`: a long clip's chunks rendered
        at once, each on workers / frame_groups workers (frames x bands)."""
        written: list[str] = []
        stages = output_stages(config)

        def attempt() -> None:
            if config.is_video:
                self._render_clip(config, written, frame_groups)
                return
            self._render(config, stages)
            self._write_outputs(config, written)

        self._with_retries(attempt)
        return written

    def render_side_by_side(self, configs: list[RenderConfig], groups: int) -> list[Exception | None]:
        """Up to `groups` renders at once, each on its own group of workers / groups workers (sharded in
        row bands within it), then each one's outputs written from its group; a clip must be one chunk.
        A lost worker is retried as for one render; a render that fails on its ranks fails them all (the
        pool is then restarted), so the caller renders them again one by one. Returns, per config, the
        error that stopped writing its outputs, or None."""
        size = self.pool.world // groups
        per_rank = [configs[r // size] if r // size < len(configs) else None for r in range(self.pool.world)]
        written: list[list[str]] = [[] for _ in configs]
        errors: list[Exception | None] = [None] * len(configs)

        def attempt() -> None:
            quiet = self.progress.quiet
            self.pool.run(render_on_rank, per_rank_args=per_rank, quiet=quiet, groups=groups)
            for index, config in enumerate(configs):
                ranks = range(index * size, (index + 1) * size)
                try:
                    if config.is_video:
                        self._write_clip(config, written[index], self._frames(config, ranks))
                    else:
                        self._write_outputs(config, written[index], ranks)
                except WorkerLost:
                    raise
                except Exception as exc:  # a file this render cannot write; the others are written
                    errors[index] = exc

        self._with_retries(attempt)
        return errors

    def render_arrays(self, config: RenderConfig, stages: list[int]) -> dict[int, np.ndarray]:
        """Render, then every stage of `stages` as one (H, W, 3) array (for the Python API)."""

        def attempt() -> dict[int, np.ndarray]:
            self._render(config, stages)
            return {stage: np.concatenate(list(self._strips(stage))) for stage in stages}

        return self._with_retries(attempt)

    def render_latents(self, config: RenderConfig) -> list:
        """Render, decoding nothing; every stage's whole latents, base first (for the Python API)."""
        return self._with_retries(lambda: self._render(config, [])[0]["latents"])

    def _with_retries(self, attempt: Callable[[], T]) -> T:
        """The one retry loop, for a render and for every item of a batch: a lost worker, while rendering
        or while the outputs are fetched, costs a fresh pool and a resume from the last checkpoint, up to
        `max_retries` times; after that the render fails and the next one starts on a fresh pool."""
        retries, limit = 0, self.placement.max_retries
        while True:
            if self._lost:
                self.pool = self.pool.restarted()
                self._lost = False
                self._note_ready()
            try:
                return attempt()
            except WorkerLost as lost:
                self._lost = True
                if retries >= limit:
                    lost.retries = retries  # the command's last line says it gave up, and how to resume
                    raise
                retries += 1
                self.progress.note(f"{lost}; starting fresh workers (retry {retries}/{limit})")
            except Exception:
                # A render that failed on its ranks leaves the pool unusable (a rank may be mid-collective):
                # the next render, of a batch, starts on a fresh one.
                self._lost = getattr(self.pool, "broken", False)
                raise

    def _render(self, config: RenderConfig, stages: list[int]) -> list[dict]:
        """Every rank renders; the strips of `stages` stay on the ranks until fetched."""
        return self._run_ranks(config, stages, self._snapshot(config, self.checkpoints))

    def _snapshot(self, config: RenderConfig, checkpoints: CheckpointDir | None) -> Snapshot | None:
        snapshot = checkpoints.load(len(config.stages)) if checkpoints else None
        if snapshot is not None and (snapshot.finished or snapshot.latents is not None):
            done = len(snapshot.finished) == len(config.stages)
            where = "its rendered stages" if done else snapshot.describe()
            self.progress.note(f"resuming from {where} ({checkpoints.path})")
        return snapshot

    def _run_ranks(
        self,
        config: RenderConfig,
        stages: list[int],
        snapshot: Snapshot | None,
        chunks: tuple[ClipChunk, ...] = (),
        groups: int = 1,
        chunk_dirs: dict[int, CheckpointDir | None] | None = None,
    ) -> list[dict]:
        """render_on_rank on every rank; checkpoints go to the render's directory, a chunk's to its own
        (`chunk_dirs`)."""

        def save(event: CheckpointEvent) -> None:
            (chunk_dirs[event.chunk] if event.chunk is not None else self.checkpoints).save(event)

        c = self.checkpoints
        with self.pool.checkpoint_sink(save if c is not None else None) as sink:
            resume = RenderResume(snapshot, c.every if c is not None else None, sink)
            cfg, quiet = self.placement.cfg_parallel, self.progress.quiet
            return self.pool.run(
                render_on_rank, config, cfg, resume, stages, quiet=quiet, chunks=chunks, groups=groups
            )

    def _strips(self, key: int | tuple[int, int], ranks: range | None = None) -> Iterator[np.ndarray]:
        """A stage's image (or with key (stage, frame) a video's frame), top to bottom: strip by strip
        from the ranks (default all; a chunk's: its group's) in band order."""
        for rank in ranks if ranks is not None else range(self.pool.world):
            while (strip := self.pool.run_on(rank, take_strip, key)) is not None:
                yield strip

    def _write_outputs(self, config: RenderConfig, written: list[str], ranks: range | None = None) -> None:
        """Write each output stage's file from `ranks` (default all), appending its path to `written`;
        files already in `written` (from an attempt that lost a worker later) are kept as they are."""
        stamp = recipe(config, self.identity)
        options = OutputOptions(dpi=config.dpi, pyramid=config.pyramid)
        dtype = np.uint16 if config.bit_depth == 16 else np.uint8
        last = len(config.stages) - 1
        for stage in output_stages(config):
            size = config.stages[stage]
            path = config.output if stage == last else stage_path(config.output, stage, size)
            if path in written:
                continue
            self.progress.note(f"writing {path}")
            strips, meta = self._strips(stage, ranks), {**stamp, "stage": stage}
            # An upscale's files keep its input's profile, gray and alpha (freescale.outputs.upscale_output).
            strips, size, kept = finished(*fitted(strips, config, stage), config, stage, options)
            write_image_strips(strips, size, dtype, path, config.overwrite, meta, kept)
            written.append(path)

    def _render_clip(self, config: RenderConfig, written: list[str], groups: int) -> None:
        """A video, chunk by chunk (`frame_chunks`; `groups` at once on groups of ranks), its frames
        fetched strip by strip and encoded in order; the frames two chunks share cross-fade, so the driver
        holds at most one overlap of frames, and memory does not grow with the clip's length."""
        if config.output in written:
            return
        chunks = frame_chunks(config.frames, config.chunk_frames, config.chunk_overlap)
        count = f" in {len(chunks)} chunks" if len(chunks) > 1 else ""
        self._write_clip(config, written, self._clip_frames(config, chunks, groups), count)

    def _write_clip(
        self, config: RenderConfig, written: list[str], frames: Iterator[np.ndarray], what: str = ""
    ) -> None:
        from freescale.outputs.video.clip_output import write_clip

        if config.output in written:
            return
        self.progress.note(f"writing {config.output}{what}")
        write_clip(config, frames, recipe(config, self.identity), self.progress)
        written.append(config.output)

    def _frames(self, config: RenderConfig, ranks: range) -> Iterator[np.ndarray]:
        """A rendered clip's last-stage frames in order, each fetched from `ranks`."""
        last = len(config.stages) - 1
        for f in range(config.frames):
            yield np.concatenate(list(self._strips((last, f), ranks)))

    def _clip_frames(
        self, config: RenderConfig, chunks: list[tuple[int, int]], groups: int
    ) -> Iterator[np.ndarray]:
        """The clip's last-stage frames in order: `groups` chunks at a time, one per group of ranks, then
        each chunk's frames fetched from its group, cross-faded where it shares them."""
        from freescale.outputs.video.clip_output import crossfaded

        last = len(config.stages) - 1
        shared: list[np.ndarray] = []  # the previous chunk's frames that this one renders again
        for first in range(0, len(chunks), groups):
            batch = range(first, min(len(chunks), first + groups))
            if len(chunks) > 1:
                frames = ", ".join(f"{a}-{b - 1}" for a, b in (chunks[i] for i in batch))
                which = f"{batch.start + 1}" + (f"-{batch.stop}" if len(batch) > 1 else "")
                self.progress.note(f"chunk {which}/{len(chunks)}: frames {frames}")
            dirs = {i: self._chunk_dir(i, chunks) for i in batch}
            jobs = tuple(ClipChunk(i, chunks[i], self._snapshot(config, dirs[i])) for i in batch)
            self._run_ranks(config, [last], None, jobs, groups, dirs)
            size = self.pool.world // groups
            for index in batch:
                # Frames two chunks share are held by both groups: take each chunk's from its own.
                group = range((index - first) * size, (index - first + 1) * size)
                start, end = chunks[index]
                next_start = chunks[index + 1][0] if index + 1 < len(chunks) else end
                weights = crossfade_weights((start, start + len(shared)))
                held = []
                for f in range(start, end):
                    frame = np.concatenate(list(self._strips((last, f), group)))
                    if f - start < len(shared):
                        frame = crossfaded(shared[f - start], frame, weights[f - start])
                    if f >= next_start:
                        held.append(frame)
                    else:
                        yield frame
                shared = held

    def _chunk_dir(self, index: int, chunks: list[tuple[int, int]]) -> CheckpointDir | None:
        """A chunk's checkpoints: the render's own for a clip of one chunk."""
        if self.checkpoints is None or len(chunks) == 1:
            return self.checkpoints
        return self.checkpoints.chunk(index)


def _model_identity(state) -> str:
    return state.model.identity
