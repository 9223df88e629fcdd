"""The `freescale` command: render, make-test-model. Bad input exits with code 2 before any loading."""

from __future__ import annotations

import argparse
import sys
import time

from freescale.errors import ConfigError
from freescale.render_config import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_NEGATIVE_PROMPT,
    FREEU_DEFAULT,
    PRESET_KEYS,
    RenderConfig,
    build_config,
    load_preset,
    load_recipe,
    preset_names,
)

_D = RenderConfig.__dataclass_fields__


def _default(name: str) -> str:
    return f"(default: {_D[name].default})"


def _add_render_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", nargs="?", help="what to render (may also come from the preset or recipe)")
    p.add_argument(
        "--from-recipe",
        help="reproduce an earlier output from its recipe (the .json written beside it); flags override it",
    )
    p.add_argument(
        "--preset",
        help=f"a preset name ({', '.join(preset_names())}) or a YAML file; flags override it (default: none)",
    )
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        help="'tiny' (built in, no download), a diffusers SDXL directory, or an SDXL "
        ".safetensors file " + _default("model"),
    )
    g.add_argument(
        "--model-config",
        help="for a .safetensors file: a diffusers-layout directory with the "
        "model's configs and tokenizers (default: the file's own directory)",
    )
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)")
    g.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="(default: fp16 on GPU, fp32 on CPU)")
    g = p.add_argument_group("size")
    g.add_argument(
        "--size",
        help="final size WIDTHxHEIGHT, a whole multiple of the native resolution "
        "(default: --scale times native)",
    )
    g.add_argument("--scale", type=int, help="final size as a multiple of the native resolution (default: 2)")
    g.add_argument(
        "--stages",
        help="explicit stage sizes, e.g. 1024,2048,4096 or 1024x768,2048x1536 "
        "(default: from --size and --stage-rule)",
    )
    g.add_argument(
        "--stage-rule",
        choices=["double", "direct"],
        help="stages for a target: native, x2, x4 ... target; or native then target (default: double)",
    )
    g = p.add_argument_group("sampling")
    g.add_argument("--steps", type=int, help=_default("steps"))
    g.add_argument("--guidance", type=float, help="classifier-free guidance scale " + _default("guidance"))
    g.add_argument("--seed", type=int, help=_default("seed"))
    g.add_argument("--negative-prompt", help=f"(default: {DEFAULT_NEGATIVE_PROMPT!r})")
    g = p.add_argument_group("FreeScale method (SPEC section 3)")
    g.add_argument(
        "--cosine-scale",
        type=float,
        help="skip-residual exponent; <= 1.0 advised for 8k " + _default("cosine_scale"),
    )
    g.add_argument(
        "--cosine-scale-bg", type=float, help="exponent outside --mask " + _default("cosine_scale_bg")
    )
    g.add_argument("--dilate-tau", type=int, help="dilate convs for steps i < tau " + _default("dilate_tau"))
    g.add_argument(
        "--restart", type=float, help="fraction of steps skipped in upper stages " + _default("restart")
    )
    g.add_argument(
        "--fast-mode",
        action="store_true",
        default=None,
        help="global attention over strided sub-grids (default: off)",
    )
    g.add_argument(
        "--no-freeu",
        dest="freeu",
        action="store_false",
        default=None,
        help=f"turn FreeU off (default: on with b1,b2,s1,s2 = {','.join(map(str, FREEU_DEFAULT))})",
    )
    g.add_argument("--freeu", dest="freeu", help="FreeU parameters b1,b2,s1,s2")
    g.add_argument(
        "--blur",
        choices=["3d", "2d"],
        help="Gaussian over h, w and channels (reference) or spatial only (default: 3d)",
    )
    g.add_argument("--image", help="image-to-image: a base image of the first stage's size (default: none)")
    g.add_argument("--mask", help="detail control mask, any size; non-zero = more detail (default: none)")
    g = p.add_argument_group("output")
    g.add_argument("-o", "--output", help=".png, .jpg or .tif path " + _default("output"))
    g.add_argument("--save-stages", action="store_true", default=None, help="also write every stage")
    g.add_argument("--overwrite", action="store_true", default=None, help="replace an existing output")
    g.add_argument(
        "--bit-depth",
        type=int,
        choices=[8, 16],
        help="bits per channel; 16 needs .tif, from the VAE's float output (default: 8)",
    )
    g.add_argument("--dpi", type=int, help="print resolution tag for PNG/JPEG/TIFF (default: none)")
    g.add_argument(
        "--pyramid",
        action="store_true",
        default=None,
        help="TIFF only: add half-size reductions for fast viewing (default: off)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress output")
    g = p.add_argument_group("checkpoints and retries")
    g.add_argument(
        "--checkpoint-dir",
        help="keep checkpoints (each stage's latents, and every --checkpoint-every steps) in this directory; "
        "a rerun with the same settings continues from it (default: none)",
    )
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=DEFAULT_CHECKPOINT_EVERY,
        help=f"steps between mid-stage checkpoints (default: {DEFAULT_CHECKPOINT_EVERY})",
    )
    g.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the render whose checkpoints are in DIR, with its settings; only output and "
        "cluster options may be given",
    )
    _add_cluster_options(p)


def _add_cluster_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster (Ray)")
    g.add_argument(
        "--workers",
        type=int,
        help="ranks to shard each upper stage over; 1 renders in this process "
        "(default: every GPU Ray sees, else 1)",
    )
    g.add_argument(
        "--address",
        help="Ray cluster address (default: ray.init() semantics: the cluster of "
        "`ray job submit` / RAY_ADDRESS if any, else an embedded local Ray)",
    )
    g.add_argument(
        "--strategy",
        default="PACK",
        choices=["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"],
        help="placement group strategy for the workers (default: PACK)",
    )
    g.add_argument(
        "--cfg-parallel",
        action="store_true",
        help="split the guidance batch over two equal groups of workers (needs an even --workers and "
        "--guidance > 1; default: off)",
    )
    g.add_argument(
        "--max-retries",
        type=int,
        default=2,
        help="after a worker dies, start fresh workers and go on from the last checkpoint (or from the "
        "start without --checkpoint-dir) up to this many times (default: 2)",
    )


# Every option a preset may set, and --overwrite, which only a flag may.
RENDER_KEYS = tuple(sorted(PRESET_KEYS | {"overwrite"}))
# What --resume may change: where and how the outputs are written.
RESUME_KEYS = ("output", "overwrite", "save_stages", "bit_depth", "dpi", "pyramid")


def _resume_values(args: argparse.Namespace) -> dict:
    from freescale.checkpoints import resume_values

    others = [k for k in RENDER_KEYS if getattr(args, k) is not None and k not in RESUME_KEYS]
    others += [k for k in ("from_recipe", "preset", "checkpoint_dir") if getattr(args, k) is not None]
    if others:
        names = ", ".join(k if k == "prompt" else "--" + k.replace("_", "-") for k in others)
        raise ConfigError(f"--resume takes the render's settings from {args.resume}; drop {names}")
    values = resume_values(args.resume)
    values.update({k: getattr(args, k) for k in RESUME_KEYS if getattr(args, k) is not None})
    return values


def config_from_args(args: argparse.Namespace):
    """Preset, then flags (or a checkpoint's settings with --resume); returns (config, model source).
    Loads nothing heavy."""
    from freescale.model_loading import resolve_model_source
    from freescale.native_resolution import native_size_of

    if getattr(args, "resume", None):
        values = _resume_values(args)
    else:
        values = load_recipe(args.from_recipe) if args.from_recipe else {}
        values.update(load_preset(args.preset) if args.preset else {})
        values.update({k: getattr(args, k) for k in RENDER_KEYS if getattr(args, k) is not None})
    source = resolve_model_source(values.get("model", "tiny"), values.get("model_config"))
    return build_config(values, native_size_of(source)), source


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
    from freescale.device_memory import local_device, query_worker_devices
    from freescale.model_spec import model_spec
    from freescale.plan import plan_for_config
    from freescale.preflight import preflight

    if placement.in_process:
        found = local_device(config.device)
    else:
        found = query_worker_devices(placement.workers, address=placement.address)
    spec = model_spec(config.model, config.model_config)
    plan = plan_for_config(
        config, placement.workers, device=found.name, cfg_parallel=placement.cfg_parallel, model=spec
    )
    preflight(plan, found.memory_bytes, available_workers=found.devices)


def cmd_plan(args: argparse.Namespace) -> int:
    from freescale.cost_calibration import link_for
    from freescale.model_spec import model_spec
    from freescale.plan import make_plan
    from freescale.plan_format import format_plan, plan_json
    from freescale.preflight import preflight
    from freescale.render_config import resolve_stages

    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers} must be at least 1")
    if args.device_memory is not None and not args.device_memory > 0:
        raise ConfigError(f"--device-memory {args.device_memory} must be a positive number of GiB")
    spec = model_spec(args.model, args.model_config)
    stages = resolve_stages(spec.native_size, args.stages, args.size, args.scale, args.stage_rule or "double")
    if args.cfg_parallel and args.workers % 2:
        raise ConfigError(f"--cfg-parallel needs an even number of workers, got --workers {args.workers}")
    plan = make_plan(
        stages, args.workers, model=spec, device=args.device,
        link=link_for(args.link, args.link_gbps, args.link_latency_us), fast_mode=args.fast_mode,
        cfg_parallel=args.cfg_parallel, steps=args.steps, restart=args.restart,
    )  # fmt: skip
    print(plan_json(plan) if args.json else format_plan(plan))
    if args.device_memory is not None:
        preflight(plan, args.device_memory * 2**30)
        print(f"fits devices of {args.device_memory:g} GiB")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from freescale.checkpoints import CheckpointDir
    from freescale.cluster.driver import Placement
    from freescale.cluster.rank_render import output_stages
    from freescale.image_output import stage_path
    from freescale.progress import Progress
    from freescale.render_config import check_outputs_free
    from freescale.rendering import render_to_files

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
    from freescale.batch import load_jobs, plan_items, run_items, summary
    from freescale.cluster.driver import Placement
    from freescale.model_loading import resolve_model_source
    from freescale.native_resolution import native_size_of
    from freescale.progress import Progress

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


def cmd_make_test_model(args: argparse.Namespace) -> int:
    import os

    from freescale.model_loading import save_tiny_model

    if os.path.exists(args.directory) and os.listdir(args.directory):
        raise ConfigError(f"make-test-model: {args.directory} exists and is not empty")
    parent = os.path.dirname(os.path.abspath(args.directory))
    if not os.path.isdir(parent):
        raise ConfigError(f"make-test-model: parent directory {parent} does not exist")
    save_tiny_model(args.directory, seed=args.seed, single_file=args.single_file)
    print(f"wrote the built-in test model to {args.directory}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="freescale", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser(
        "render",
        help="render an image",
        description="Render one image with "
        "FreeScale. Every option falls back to the preset, then to its default.",
    )
    _add_render_options(render)
    render.set_defaults(run=cmd_render)
    plan = commands.add_parser(
        "plan",
        help="predict a render's time, memory and sharding without rendering",
        description="Predict each stage's sharding, FLOPs and bytes per worker, seconds and peak memory per "
        "worker from the calibrated cost model (README: Planning a render). Loads no model.",
    )
    plan.add_argument(
        "--model",
        default="sdxl",
        help="'sdxl' (SDXL base's architecture, no files), 'tiny', a diffusers directory or a .safetensors "
        "file (only configs and headers are read) (default: sdxl)",
    )
    plan.add_argument("--model-config", help="for a .safetensors file: its diffusers-layout config directory")
    plan.add_argument("--size", help="final size WIDTHxHEIGHT (default: --scale times native)")
    plan.add_argument(
        "--scale", type=int, help="final size as a multiple of the native resolution (default: 2)"
    )
    plan.add_argument("--stages", help="explicit stage sizes, e.g. 1024,2048,4096")
    plan.add_argument("--stage-rule", choices=["double", "direct"], help="(default: double)")
    plan.add_argument(
        "--workers", type=int, default=1, help="ranks each upper stage is sharded over (default: 1)"
    )
    plan.add_argument(
        "--link", default="nvlink", choices=["nvlink", "pcie", "ethernet", "loopback"],
        help="interconnect preset (README lists their assumed bandwidth and latency) (default: nvlink)",
    )  # fmt: skip
    plan.add_argument("--link-gbps", type=float, help="override the link's bandwidth, GB/s")
    plan.add_argument("--link-latency-us", type=float, help="override the link's latency per collective, us")
    plan.add_argument(
        "--device", default="NVIDIA H200", help="calibrated device (default: NVIDIA H200; or cpu)"
    )
    plan.add_argument("--fast-mode", action="store_true", help="global attention over strided sub-grids")
    plan.add_argument("--cfg-parallel", action="store_true", help="guidance halves on two groups of workers")
    plan.add_argument("--steps", type=int, default=50, help="(default: 50)")
    plan.add_argument("--restart", type=float, default=0.3, help="(default: 0.3)")
    plan.add_argument("--device-memory", type=float, help="GiB per device: also check that the render fits")
    plan.add_argument("--json", action="store_true", help="every worker's numbers as JSON")
    plan.set_defaults(run=cmd_plan)
    make = commands.add_parser("make-test-model", help="save the built-in tiny model in diffusers layout")
    make.add_argument("directory")
    make.add_argument(
        "--seed", type=int, default=0, help="weight seed (default: 0, the same as --model tiny)"
    )
    make.add_argument(
        "--single-file",
        action="store_true",
        help="also write tiny_sdxl.safetensors in the original SDXL single-file layout",
    )
    make.set_defaults(run=cmd_make_test_model)
    batch = commands.add_parser(
        "batch",
        help="many renders with the model kept warm",
        description="Render every job of a YAML file ({defaults: {...}, preset: NAME, jobs: [{prompt: ..., "
        "output: ...}, ...]}) or of a prompts file (one prompt per line). Finished outputs are skipped, "
        "so a rerun completes a batch; a failed job is reported and the others go on.",
    )
    batch.add_argument("jobs", help="a .yaml/.yml jobs file or a text file of prompts")
    batch.add_argument("--output-dir", help="where relative outputs go (default: the jobs file's directory)")
    batch.add_argument("--quiet", action="store_true", help="no progress output")
    _add_cluster_options(batch)
    batch.set_defaults(run=cmd_batch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, NotImplementedError) as exc:  # bad input, or a documented unsupported case
        print(f"freescale: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        from freescale.cluster.worker_pool import WorkerLost

        if not isinstance(exc, WorkerLost):
            raise
        print(f"freescale: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
