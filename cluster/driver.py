"""The Ray driver: start the workers, run one render sharded over all of them, write the outputs.

Reads top to bottom: pool up (placement group, actors, process group, model loaded once per
actor), every rank renders its bands, the driver stacks the image rows and writes the files.
"""

from __future__ import annotations

from freescale.cluster.rank_render import assemble, output_stages, render_on_rank, render_on_worker
from freescale.cluster.shard_group import ShardGroup
from freescale.cluster.worker_pool import WorkerPool
from freescale.image_output import OutputOptions, save_image, stage_path
from freescale.progress import Progress
from freescale.render_config import RenderConfig


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


def render_local(config: RenderConfig, model, progress: Progress) -> list[dict]:
    """One rank in this process: the same code a worker runs, with a group of one."""
    return [render_on_rank(model, ShardGroup.single(), config, progress)]


def render_distributed(
    config: RenderConfig,
    workers: int,
    address: str | None,
    strategy: str,
    progress: Progress,
    cfg_parallel: bool = False,
) -> tuple[list[dict], str]:
    """Shard the render over `workers` Ray actors; returns every rank's result and the model identity."""
    progress.note(f"starting {workers} workers")
    with WorkerPool(
        workers, model=config.model, model_config=config.model_config, device=config.device,
        dtype=config.dtype, strategy=strategy, address=address,
    ) as pool:  # fmt: skip
        identity = pool.run(_model_identity)[0]
        progress.note(f"{pool.world} workers ready ({pool.backend})")
        return pool.run(render_on_worker, config, cfg_parallel), identity


def _model_identity(state) -> str:
    return state.model.identity
