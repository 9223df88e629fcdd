"""The driver: keep the model warm (in this process, or on a pool of Ray workers), run renders sharded
over all ranks, stack the ranks' image rows and write the outputs.

Reads top to bottom: `Renderer` starts the pool once (placement group, actors, process group, model
loaded once per actor); each `render(config)` has every rank render its bands, then writes files.
"""

from __future__ import annotations

from dataclasses import dataclass

from freescale.checkpoints import CheckpointDir, Snapshot
from freescale.cluster.checkpoint_queue import CheckpointQueue
from freescale.cluster.rank_render import (
    RenderResume,
    assemble,
    output_stages,
    render_on_rank,
    render_on_worker,
)
from freescale.cluster.shard_group import ShardGroup
from freescale.cluster.worker_pool import WorkerLost, WorkerPool
from freescale.image_output import OutputOptions, save_image, stage_path
from freescale.progress import Progress
from freescale.render_config import RenderConfig


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


def write_outputs(config: RenderConfig, results: list[dict], recipe: dict, progress: Progress) -> list[str]:
    written = []
    last = len(config.stages) - 1
    for stage in output_stages(config):
        path = config.output if stage == last else stage_path(config.output, stage, config.stages[stage])
        progress.note(f"writing {path}")
        options = OutputOptions(dpi=config.dpi, pyramid=config.pyramid)
        save_image(assemble(results, stage), path, config.overwrite, {**recipe, "stage": stage}, options)
        written.append(path)
    return written


class Renderer:
    """A warm model for many renders of the same model: `with Renderer(...) as r: r.render(config)`."""

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
        from freescale.rendering import load_model_for

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

    def render(self, config: RenderConfig) -> list[dict]:
        """Every rank's result for one render (images by stage; latents from rank 0). A lost worker
        costs a fresh pool and a resume from the last checkpoint, up to `max_retries` times."""
        retries = 0
        while True:
            snapshot = self.checkpoints.load(len(config.stages)) if self.checkpoints else None
            if snapshot is not None and (snapshot.finished or snapshot.latents is not None):
                self.progress.note(f"resuming from {snapshot.describe()} ({self.checkpoints.path})")
            try:
                return self._render_once(config, snapshot)
            except WorkerLost as lost:
                if retries >= self.placement.max_retries:
                    raise
                retries += 1
                self.progress.note(
                    f"{lost}; starting fresh workers (retry {retries}/{self.placement.max_retries})"
                )
                self.pool = self.pool.restarted()
                self.progress.note(f"{self.pool.world} workers ready ({self.pool.backend})")

    def _render_once(self, config: RenderConfig, snapshot: Snapshot | None) -> list[dict]:
        every = self.checkpoints.every if self.checkpoints else None
        if self.pool is None:
            sink = self.checkpoints.save if self.checkpoints else None
            resume = RenderResume(snapshot, every, sink)
            return [render_on_rank(self.model, ShardGroup.single(), config, self.progress, resume=resume)]
        if self.checkpoints is None:
            return self.pool.run(render_on_worker, config, self.placement.cfg_parallel)
        with CheckpointQueue(self.checkpoints.save) as queue:
            resume = RenderResume(snapshot, every, queue.worker_sink)
            return self.pool.run(render_on_worker, config, self.placement.cfg_parallel, resume)

    def render_to_files(self, config: RenderConfig) -> list[str]:
        from freescale.rendering import recipe

        return write_outputs(config, self.render(config), recipe(config, self.identity), self.progress)


def _model_identity(state) -> str:
    return state.model.identity
