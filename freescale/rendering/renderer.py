"""The driver: keep the model warm (in this process, or on a pool of Ray workers), run renders sharded
over all ranks, and write the outputs strip by strip as the ranks' rows arrive.

Reads top to bottom: `Renderer` starts the pool once (placement group, actors, process group, model
loaded once per actor); each `render_to_files(config)` has every rank render its bands (resuming from
checkpoints after a lost worker), then streams each output image into its file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from freescale.cluster.ray.checkpoint_queue import CheckpointQueue
from freescale.cluster.ray.worker_pool import WorkerLost, WorkerPool
from freescale.cluster.sharding.shard_group import ShardGroup
from freescale.config.render_config import RenderConfig
from freescale.outputs.checkpoints import CheckpointDir
from freescale.outputs.image_output import OutputOptions, stage_path
from freescale.outputs.streaming_output import write_image_strips
from freescale.progress import Progress
from freescale.rendering.rank_render import (
    RenderResume,
    output_stages,
    output_strips,
    render_latents,
    render_on_worker,
    take_strip,
)


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


class Renderer:
    """A warm model for many renders of the same model: `with Renderer(...) as r: r.render_to_files(c)`."""

    def __init__(
        self,
        model_config: RenderConfig,
        placement: Placement,
        progress: Progress,
        checkpoints: CheckpointDir | None = None,
    ):
        self.model_config = model_config  # only its model, model_config, device and dtype are used
        self.placement = placement
        self.progress = progress
        self.checkpoints = checkpoints
        self.model = None
        self.pool: WorkerPool | None = None
        self.identity = ""

    def __enter__(self) -> Renderer:
        from freescale.rendering.api import load_model_for

        c, p = self.model_config, self.placement
        if p.in_process:
            self.model = load_model_for(c)
            self.identity = self.model.identity
            return self
        self.progress.note(f"starting {p.workers} workers")
        self.pool = WorkerPool(
            p.workers, model=c.model, model_config=c.model_config, device=c.device, dtype=c.dtype,
            strategy=p.strategy, address=p.address,
        )  # fmt: skip
        self.pool.start()  # cleans up after itself if it fails
        try:
            self.identity = self.pool.run(_model_identity)[0]
        except BaseException:
            self.pool.shutdown()
            raise
        self.progress.note(f"{self.pool.world} workers ready ({self.pool.backend})")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def render_to_files(self, config: RenderConfig) -> list[str]:
        """Render, then write the outputs strip by strip (the driver holds one strip and the writer's
        buffer, never the image); returns the paths written. A lost worker, while rendering or while
        the outputs are fetched, costs a fresh pool and a resume from the last checkpoint, up to
        `max_retries` times."""
        retries, written = 0, []
        while True:
            try:
                self._write_outputs(config, self._render(config), written)
                return written
            except WorkerLost as lost:
                if retries >= self.placement.max_retries:
                    raise
                retries += 1
                limit = self.placement.max_retries
                self.progress.note(f"{lost}; starting fresh workers (retry {retries}/{limit})")
                self.pool = self.pool.restarted()
                self.progress.note(f"{self.pool.world} workers ready ({self.pool.backend})")

    def _render(self, config: RenderConfig) -> list[dict]:
        """Every rank's result: in this process the latents; on workers the strip counts per stage (the
        strips stay there until fetched) and, from rank 0, the latents."""
        snapshot = self.checkpoints.load(len(config.stages)) if self.checkpoints else None
        if snapshot is not None and (snapshot.finished or snapshot.latents is not None):
            self.progress.note(f"resuming from {snapshot.describe()} ({self.checkpoints.path})")
        every = self.checkpoints.every if self.checkpoints else None
        if self.pool is None:
            sink = self.checkpoints.save if self.checkpoints else None
            resume = RenderResume(snapshot, every, sink)
            group = ShardGroup.single()
            return [{"latents": render_latents(self.model, group, config, self.progress, resume=resume)}]
        if self.checkpoints is None:
            return self.pool.run(render_on_worker, config, self.placement.cfg_parallel)
        with CheckpointQueue(self.checkpoints.save) as queue:
            resume = RenderResume(snapshot, every, queue.worker_sink)
            return self.pool.run(render_on_worker, config, self.placement.cfg_parallel, resume)

    def _strips(self, config: RenderConfig, results: list[dict], stage: int) -> Iterator[np.ndarray]:
        """A stage's image, top to bottom: decoded here as the VAE tiles come, or fetched strip by
        strip from the ranks in band order."""
        if self.pool is None:
            rows = (0, config.stages[stage][0])
            yield from output_strips(self.model, config, results[0]["latents"][stage], rows)
            return
        for rank, result in enumerate(results):
            for _ in range(result["strips"].get(stage, 0)):
                yield self.pool.run_on(rank, take_strip, stage)

    def _write_outputs(self, config: RenderConfig, results: list[dict], written: list[str]) -> None:
        """Write each output stage's file, appending its path to `written`; files already in `written`
        (from an attempt that lost a worker later) are kept as they are."""
        from freescale.rendering.api import recipe

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
            strips = self._strips(config, results, stage)
            write_image_strips(
                strips, size, dtype, path, config.overwrite, {**stamp, "stage": stage}, options
            )
            written.append(path)


def _model_identity(state) -> str:
    return state.model.identity
