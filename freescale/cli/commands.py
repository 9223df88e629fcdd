"""The `freescale` command: render, video, batch, plan, make-test-model. Bad input exits with code 2
before any loading."""

from __future__ import annotations

import argparse
import sys

from freescale.cli import interrupts
from freescale.cli.model_commands import builtin_families, cmd_make_test_clip, cmd_make_test_model
from freescale.cli.plan_command import cmd_plan
from freescale.cli.render_command import cmd_batch, cmd_render
from freescale.cli.render_options import add_cluster_options, add_options, add_render_options
from freescale.cli.upscale_command import add_upscale_command
from freescale.config.options import command_sections
from freescale.errors import ConfigError
from freescale.rendering.clip_folder import CLIP_EXTENSIONS, FOLDER_KEYS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="freescale", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser(
        "render",
        help="render an image",
        description="Render one image with "
        "FreeScale. Every option falls back to the preset, then to its default.",
        epilog=interrupts.EXIT_CODES,
        formatter_class=interrupts.ExitCodesFormatter,
    )
    add_render_options(render, command_sections("render"))
    render.set_defaults(run=cmd_render)
    video = commands.add_parser(
        "video",
        help="render or upscale a video",
        description="Text-to-video with an AnimateDiff motion adapter, or with --input CLIP video-to-video "
        "upscaling (the clip replaces the base stage). Every option falls back to the preset, then to its "
        "default.",
        epilog=interrupts.EXIT_CODES,
        formatter_class=interrupts.ExitCodesFormatter,
    )
    add_render_options(video, command_sections("video"))
    video.set_defaults(run=cmd_render)
    add_upscale_command(commands)
    plan = commands.add_parser(
        "plan",
        help="predict a render's time, memory and sharding without rendering",
        description="Predict each stage's sharding, FLOPs and bytes per worker, seconds and peak memory per "
        "worker from the calibrated cost model (README: Planning a render). Loads no model.",
    )
    add_options(
        plan, ("model", "model_config", "size", "scale", "stages", "stage_rule", "workers"), resolved=True,
        model={"default": "sdxl", "help": "'sdxl' or 'sd15' (the base model's architecture, no files), "
               "'tiny' or 'tiny-sd15', a diffusers directory or a .safetensors file (only configs and "
               "headers are read) (default: sdxl)"},
        workers={"default": 1, "help": "ranks each upper stage is sharded over (default: 1)"},
    )  # fmt: skip
    add_options(plan, ("print_size", "landscape", "aspect", "dpi", "fit"), resolved=True)
    plan.add_argument(
        "--link", default="nvlink", choices=["nvlink", "pcie", "ethernet", "loopback"],
        help="interconnect preset (README lists their assumed bandwidth and latency) (default: nvlink)",
    )  # fmt: skip
    plan.add_argument("--link-gbps", type=float, help="override the link's bandwidth, GB/s")
    plan.add_argument("--link-latency-us", type=float, help="override the link's latency per collective, us")
    plan.add_argument(
        "--device", default="NVIDIA H200", help="calibrated device (default: NVIDIA H200; or cpu)"
    )
    add_options(plan, ("fast_mode", "cfg_parallel", "steps", "restart"), resolved=True)
    plan.add_argument("--device-memory", type=float, help="GiB per device: also check that the render fits")
    plan.add_argument("--json", action="store_true", help="every worker's numbers as JSON")
    plan.set_defaults(run=cmd_plan)
    make = commands.add_parser("make-test-model", help="save a built-in tiny model in diffusers layout")
    make.add_argument("directory")
    make.add_argument(
        "--seed", type=int, default=0, help="weight seed (default: 0, the same as --model tiny)"
    )
    make.add_argument(
        "--family", default="sdxl", choices=builtin_families(),
        help="whose tiny model: sdxl (--model tiny) or sd15 (--model tiny-sd15) (default: sdxl)",
    )  # fmt: skip
    make.add_argument(
        "--single-file",
        action="store_true",
        help="also write tiny_<family>.safetensors in the family's original single-file layout",
    )
    make.add_argument(
        "--motion",
        action="store_true",
        help="also write the family's tiny AnimateDiff motion adapter to DIRECTORY/motion_adapter",
    )
    make.set_defaults(run=cmd_make_test_model)
    clip = commands.add_parser(
        "make-test-clip", help="write a short clip (a pan with a tone) to try video-to-video on"
    )
    clip.add_argument("path", help="the clip to write: .mp4, .mov or .mkv")
    clip.add_argument("--size", default="64x48", help="WIDTHxHEIGHT, even sides (default: 64x48)")
    clip.add_argument("--frames", type=int, default=8, help="(default: 8)")
    clip.add_argument("--fps", type=float, default=8.0, help="(default: 8)")
    clip.add_argument("--no-audio", action="store_true", help="no audio stream (default: an AAC tone)")
    clip.set_defaults(run=cmd_make_test_clip)
    batch = commands.add_parser(
        "batch",
        help="many renders with the model kept warm",
        description="Render every job of a YAML file ({defaults: {...}, preset: NAME, jobs: [{prompt: ..., "
        "output: ...}, ...]}) or of a prompts file (one prompt per line), or with --input-dir upscale every "
        "clip of a folder. Finished outputs are skipped, so a rerun completes a batch; a failed job is "
        "reported and the others go on.",
        epilog=interrupts.EXIT_CODES,
        formatter_class=interrupts.ExitCodesFormatter,
    )
    batch.add_argument("jobs", nargs="?", help="a .yaml/.yml jobs file or a text file of prompts")
    batch.add_argument(
        "--output-dir",
        help="where relative outputs go (default: the jobs file's directory); with --input-dir, the clips'",
    )
    batch.add_argument("--quiet", action="store_true", help="no progress output")
    batch.add_argument(
        "--allow-outside", action="store_true",
        help="let jobs write outputs outside --output-dir (or the jobs file's folder)",
    )  # fmt: skip
    batch.add_argument(
        "--allow-pickle", action="store_true",
        help="also load pickled model weights (.bin, .ckpt, .pt: loading one can run code it carries)",
    )  # fmt: skip
    folder = batch.add_argument_group(
        "folder of clips", f"--input-dir DIR: every clip of DIR ({', '.join(CLIP_EXTENSIONS)}; not its "
        "subfolders, not hidden files) upscaled to --output-dir/<name> in the codec's container (.mp4 by "
        "default); the preset, then these flags, give every clip's settings",
    )  # fmt: skip
    folder.add_argument("--input-dir", metavar="DIR", help="the folder of clips to upscale, instead of jobs")
    folder.add_argument("--prompt", help="text guiding every clip's upscale (default: empty)")
    add_options(
        folder, ("preset", *(k for k in FOLDER_KEYS if k != "prompt")),
        bit_depth={"help": "bits per channel; 16 writes .mov (ProRes), or .mkv with --codec ffv1 "
                   "(default: 8)"},
    )  # fmt: skip
    add_cluster_options(batch)
    batch.add_argument(
        "--jobs-at-once", default="auto", metavar="N|auto",
        help="jobs rendered side by side, each on workers / N workers (images and clips of one chunk; "
        "default: auto, whichever the cost model says finishes the batch first; 1 shards every job over "
        "all the workers)",
    )  # fmt: skip
    batch.set_defaults(run=cmd_batch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with interrupts.handled_signals():
            return args.run(args)
    except KeyboardInterrupt as exc:  # SIGINT or SIGTERM, after every cleanup ran
        print(interrupts.interrupted_line(exc, args.command), file=sys.stderr)
        return interrupts.exit_code(exc)
    except Exception as exc:
        signum = interrupts.signal_received()
        if signum is not None:
            # A scheduler signals the whole process group: the workers die of it too, and their loss may
            # surface before the driver's own handler runs. The signal stopped the render either way.
            interrupted = interrupts.Interrupted(signum)
            print(interrupts.interrupted_line(interrupted, args.command), file=sys.stderr)
            return interrupts.exit_code(interrupted)
        if isinstance(exc, (ConfigError, NotImplementedError)):  # bad input, or a documented unsupported case
            print(f"freescale: error: {exc}", file=sys.stderr)
            return 2
        from freescale.cluster.ray.worker_pool import WorkerLost

        if not isinstance(exc, WorkerLost):
            raise
        checkpoints = getattr(args, "resume", None) or getattr(args, "checkpoint_dir", None)
        print(interrupts.worker_lost_line(exc, args.command, checkpoints), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
