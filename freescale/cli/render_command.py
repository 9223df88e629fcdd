"""`freescale render`, `freescale video` and `freescale batch`: validate everything, then render in this
process or on Ray workers."""

from __future__ import annotations

import argparse
import sys
import time

from freescale.cli.interrupts import reporting_interruption
from freescale.cli.render_options import config_from_args
from freescale.cluster.ray.session import RaySession
from freescale.errors import ConfigError


def default_workers(address: str | None, session: RaySession) -> int:
    """Every GPU of the Ray cluster we would join, else every local GPU, else 1."""
    import os

    if address is None and "RAY_ADDRESS" not in os.environ:
        import torch

        return max(torch.cuda.device_count(), 1)
    return max(session.gpus(), 1)


def check_sharding(config, workers: int, cfg_parallel: bool, source) -> None:
    """The one sharding check (freescale.config.sharding_check), with the band geometry of `source`."""
    from freescale.config.sharding_check import band_geometry_of
    from freescale.config.sharding_check import check_sharding as check

    geometry = band_geometry_of(source)
    check(config.stages, workers, cfg_parallel, config.guidance, geometry.align_rows, geometry.vae_scale)


def worker_device(config, placement, session: RaySession):
    """The device each worker would get (the smallest free memory Ray reports, in the session the pool
    will use), asked before any model is loaded."""
    from freescale.cluster.ray.device_probe import ray_worker_devices
    from freescale.planning.device_memory import local_device

    if placement.in_process:
        return local_device(config.device)
    session.ensure()
    return ray_worker_devices(placement.workers)


def preflight_render(config, placement, found, spec=None):
    """Refuse a render whose estimated memory per worker exceeds the devices `found`; its plan. `spec`:
    the model's, when already read (a batch's jobs share one)."""
    from freescale.planning.model_spec import model_spec
    from freescale.planning.plan import plan_for_config
    from freescale.planning.preflight import preflight

    spec = spec or model_spec(config.model, config.model_config)
    plan = plan_for_config(
        config, placement.workers, device=found.name, cfg_parallel=placement.cfg_parallel, model=spec
    )
    preflight(plan, found.memory_bytes, available_workers=found.devices)
    return plan


def check_clip_output(config) -> None:
    """A video's output before any model loads: every frame file of a pattern free, and the input's audio
    able to go into the container."""
    from freescale.config.video_outputs import check_video_output
    from freescale.inputs.video_reader import read_video_info
    from freescale.outputs.video.audio_remux import check_audio_fits

    check_video_output(config.output, config.codec, config.bit_depth, config.overwrite, config.frames)
    if config.input is not None:
        check_audio_fits(read_video_info(config.input), config.output)


def cmd_render(args: argparse.Namespace) -> int:
    """`freescale render` and `freescale video` (the config says which)."""
    return run_render(args, *config_from_args(args))


def run_render(args: argparse.Namespace, config, source, prepare=None) -> int:
    """Check, plan and render `config` as `cmd_render` does; `prepare(config)`, after every check and
    before any model loads, may return the config to render (`freescale upscale` writes a caption)."""
    from freescale.config.render_config import check_outputs_free
    from freescale.outputs.checkpoints import CheckpointDir
    from freescale.outputs.image_output import stage_path
    from freescale.planning.frame_split import clip_frame_groups
    from freescale.progress import Progress
    from freescale.rendering.api import render_to_files
    from freescale.rendering.rank_render import output_stages
    from freescale.rendering.renderer import Placement

    last = len(config.stages) - 1
    check_outputs_free(
        config, [stage_path(config.output, s, config.stages[s]) for s in output_stages(config) if s != last]
    )
    if config.is_video:
        check_clip_output(config)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers} must be at least 1")
    if args.max_retries < 0:
        raise ConfigError(f"--max-retries {args.max_retries} must be 0 or more")
    checkpoint_path = args.resume or args.checkpoint_dir
    checkpoints = CheckpointDir(checkpoint_path, args.checkpoint_every) if checkpoint_path else None
    with RaySession(args.address) as session:  # one Ray for the worker count, the probe and the pool
        workers = args.workers or default_workers(args.address, session)
        check_sharding(config, workers, args.cfg_parallel, source)
        placement = Placement(workers, args.address, args.strategy, args.cfg_parallel, args.max_retries)
        found = worker_device(config, placement, session)
        plan = preflight_render(config, placement, found)
        config = prepare(config) if prepare is not None else config
        if checkpoints is not None:
            checkpoints.claim(config)  # refuses a directory holding another render
        progress = Progress(quiet=args.quiet)
        frame_groups = clip_frame_groups(config, plan, found.memory_bytes, progress.note)
        started = time.monotonic()
        stages = " -> ".join(f"{w}x{h}" for h, w in config.stages)
        progress.note(f"model {config.model}; stages {stages}; {workers} worker(s)")
        with reporting_interruption(progress, checkpoints):
            written = render_to_files(config, placement, progress, checkpoints, frame_groups)
        progress.note(f"done in {time.monotonic() - started:.1f}s: {', '.join(written)}")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from freescale.config.lora_option import parse_loras
    from freescale.models.families import family_of_source
    from freescale.models.loading import resolve_model_source
    from freescale.models.native_resolution import native_size_of
    from freescale.planning.job_split import check_jobs_at_once
    from freescale.planning.model_spec import model_spec
    from freescale.progress import Progress
    from freescale.rendering.batch import job_message, load_batch, plan_items, refuse_shared_failure, summary
    from freescale.rendering.batch_run import run_items
    from freescale.rendering.clip_folder import FOLDER_KEYS
    from freescale.rendering.renderer import Placement

    flags = {k: getattr(args, k) for k in FOLDER_KEYS if getattr(args, k) is not None}
    jobs, outputs = load_batch(args.jobs, args.input_dir, args.output_dir, args.preset, flags)
    model = (jobs[0].get("model", "tiny"), jobs[0].get("model_config"))
    lora = parse_loras(jobs[0].get("lora"), args.allow_pickle)  # shared, like the model: exit 2 if bad
    source = resolve_model_source(*model, args.allow_pickle, lora=lora)
    root = None if args.allow_outside else outputs
    items = plan_items(jobs, native_size_of(source), family_of_source(source), root, args.allow_pickle)
    refuse_shared_failure(items)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers} must be at least 1")
    if args.max_retries < 0:
        raise ConfigError(f"--max-retries {args.max_retries} must be 0 or more")
    with RaySession(args.address) as session:
        workers = args.workers or default_workers(args.address, session)
        jobs_at_once = check_jobs_at_once(args.jobs_at_once, workers, args.cfg_parallel)
        for item in items:
            if item.config is not None:
                check_sharding(item.config, workers, args.cfg_parallel, source)
        progress = Progress(quiet=args.quiet)
        placement = Placement(workers, args.address, args.strategy, args.cfg_parallel, args.max_retries)
        pending = [item for item in items if item.status == "pending"]
        found = worker_device(pending[0].config, placement, session) if pending else None
        spec = model_spec(*model) if pending else None  # one warm model: its configs read once
        plans = {}
        for item in pending:  # a job too big for the workers fails alone, before anything renders
            try:
                plans[item.index] = preflight_render(item.config, placement, found, spec)
            except ConfigError as exc:
                item.status, item.message = "failed", job_message(exc)
        memory = found.memory_bytes if found is not None else None
        run_items(items, placement, progress, plans, memory, jobs_at_once)
    report = summary(items)
    print(report, file=sys.stderr if any(i.status == "failed" for i in items) else sys.stdout)
    return 1 if any(item.status == "failed" for item in items) else 0
