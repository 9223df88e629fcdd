"""The driver: keep the model warm (in this process, or on a pool of Ray workers), run renders sharded
over all ranks, stack the ranks' image rows and write the outputs.

Reads top to bottom: `Renderer` starts the pool once (placement group, actors, process group, model
loaded once per actor); each `render(config)` has every rank render its bands, then writes files.
"""

from __future__ import annotations

from dataclasses import dataclass

from freescale.cluster.rank_render import assemble, output_stages, render_on_rank, render_on_worker
from freescale.cluster.shard_group import ShardGroup
from freescale.cluster.worker_pool import WorkerPool
from freescale.image_output import OutputOptions, save_image, stage_path
from freescale.progress import Progress
from freescale.render_config import RenderConfig


@dataclass(frozen=True)
class Placement:
    """Where renders run: one rank in this process, or `workers` Ray actors."""

    workers: int = 1
    address: str | None = None
    strategy: str = "PACK"
    cfg_parallel: bool = False

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

    def __init__(self, model_config: RenderConfig, placement: Placement, progress: Progress):
        self.model_config = model_config  # only its model, model_config, device and dtype are used
        self.placement = placement
        self.progress = progress
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
        """Every rank's result for one render (images by stage; latents from rank 0)."""
        if self.pool is None:
            return [render_on_rank(self.model, ShardGroup.single(), config, self.progress)]
        return self.pool.run(render_on_worker, config, self.placement.cfg_parallel)

    def render_to_files(self, config: RenderConfig) -> list[str]:
        from freescale.rendering import recipe

        return write_outputs(config, self.render(config), recipe(config, self.identity), self.progress)


def _model_identity(state) -> str:
    return state.model.identity
