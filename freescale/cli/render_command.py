"""`freescale render` and `freescale batch`: validate everything, then render in this process or on
Ray workers."""

from __future__ import annotations

import argparse
import sys
import time

from freescale.cli.render_options import config_from_args
from freescale.errors import ConfigError


def default_workers(address: str | None) -> int:
    """Every GPU of the Ray cluster we would join, else every local GPU, else 1."""
    import os

    if address is None and "RAY_ADDRESS" not in os.environ:
        import torch

        return max(torch.cuda.device_count(), 1)
    import ray

    ray.init(address=address, ignore_reinit_error=True, logging_level="ERROR")
    return max(int(ray.cluster_resources().get("GPU", 0)), 1)


def check_sharding(config, workers: int, cfg_parallel: bool) -> None:
    """Every rank of a band group needs at least one 4-latent-row unit of every upper stage."""
    if cfg_parallel:
        if workers % 2:
            raise ConfigError(f"--cfg-parallel needs an even number of workers, got --workers {workers}")
        if config.guidance <= 1.0:
            raise ConfigError(
                f"--cfg-parallel needs --guidance > 1 (got {config.guidance}): no batch to split"
            )
    ranks = workers // 2 if cfg_parallel else workers
    for h, w in config.stages[1:]:
        units = h // 8 // 4
        if ranks > units:
            raise ConfigError(
                f"--workers {workers}: stage {w}x{h} has only {units} bands of 32 px rows to share; "
                f"use at most {units * (2 if cfg_parallel else 1)} workers"
            )


def preflight_render(config, placement) -> None:
    """Refuse, before any model is loaded, a render whose estimated memory per worker exceeds the
    devices the workers would get (the smallest free memory Ray reports)."""
    from freescale.cluster.ray.device_probe import query_worker_devices
    from freescale.planning.device_memory import local_device
    from freescale.planning.model_spec import model_spec
    from freescale.planning.plan import plan_for_config
    from freescale.planning.preflight import preflight

    if placement.in_process:
        found = local_device(config.device)
    else:
        found = query_worker_devices(placement.workers, address=placement.address)
    spec = model_spec(config.model, config.model_config)
    plan = plan_for_config(
        config, placement.workers, device=found.name, cfg_parallel=placement.cfg_parallel, model=spec
    )
    preflight(plan, found.memory_bytes, available_workers=found.devices)


def cmd_render(args: argparse.Namespace) -> int:
    from freescale.config.render_config import check_outputs_free
    from freescale.outputs.checkpoints import CheckpointDir
    from freescale.outputs.image_output import stage_path
    from freescale.progress import Progress
    from freescale.rendering.api import render_to_files
    from freescale.rendering.rank_render import output_stages
    from freescale.rendering.renderer import Placement

    config, _ = config_from_args(args)
    last = len(config.stages) - 1
    check_outputs_free(
        config, [stage_path(config.output, s, config.stages[s]) for s in output_stages(config) if s != last]
    )
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers} must be at least 1")
    if args.max_retries < 0:
        raise ConfigError(f"--max-retries {args.max_retries} must be 0 or more")
    workers = args.workers or default_workers(args.address)
    check_sharding(config, workers, args.cfg_parallel)
    placement = Placement(workers, args.address, args.strategy, args.cfg_parallel, args.max_retries)
    preflight_render(config, placement)
    checkpoint_path = args.resume or args.checkpoint_dir
    checkpoints = CheckpointDir(checkpoint_path, args.checkpoint_every) if checkpoint_path else None
    if checkpoints is not None:
        checkpoints.claim(config)  # refuses a directory holding another render
    progress = Progress(quiet=args.quiet)
    started = time.monotonic()
    stages = " -> ".join(f"{w}x{h}" for h, w in config.stages)
    progress.note(f"model {config.model}; stages {stages}; {workers} worker(s)")
    written = render_to_files(config, placement, progress, checkpoints)
    progress.note(f"done in {time.monotonic() - started:.1f}s: {', '.join(written)}")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from freescale.models.loading import resolve_model_source
    from freescale.models.native_resolution import native_size_of
    from freescale.progress import Progress
    from freescale.rendering.batch import load_jobs, plan_items, run_items, summary
    from freescale.rendering.renderer import Placement

    jobs = load_jobs(args.jobs, args.output_dir)
    if not jobs:
        raise ConfigError(f"batch file {args.jobs} has no jobs")
    source = resolve_model_source(jobs[0].get("model", "tiny"), jobs[0].get("model_config"))
    items = plan_items(jobs, native_size_of(source))
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers} must be at least 1")
    workers = args.workers or default_workers(args.address)
    for item in items:
        if item.config is not None:
            check_sharding(item.config, workers, args.cfg_parallel)
    progress = Progress(quiet=args.quiet)
    run_items(items, Placement(workers, args.address, args.strategy, args.cfg_parallel), progress)
    report = summary(items)
    print(report, file=sys.stderr if any(i.status == "failed" for i in items) else sys.stdout)
    return 1 if any(item.status == "failed" for item in items) else 0
