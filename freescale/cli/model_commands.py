"""`freescale make-test-model` and `make-test-clip`: save a built-in tiny model (SDXL or SD1.5) to disk, as
a user's model would be, and make a clip with known motion to upscale."""

from __future__ import annotations

import argparse
import os

from freescale.errors import ConfigError
from freescale.models.families import BUILTIN_MODELS


def builtin_families() -> list[str]:
    """Families that have a built-in tiny model, the choices of make-test-model --family."""
    return [family.name for family in BUILTIN_MODELS.values()]


def cmd_make_test_model(args: argparse.Namespace) -> int:
    import os

    from freescale.models.loading import save_tiny_model

    if os.path.exists(args.directory) and os.listdir(args.directory):
        raise ConfigError(f"make-test-model: {args.directory} exists and is not empty")
    parent = os.path.dirname(os.path.abspath(args.directory))
    if not os.path.isdir(parent):
        raise ConfigError(f"make-test-model: parent directory {parent} does not exist")
    save_tiny_model(
        args.directory, seed=args.seed, single_file=args.single_file, family=args.family, motion=args.motion
    )
    extra = " and its motion adapter" if args.motion else ""
    print(f"wrote the built-in {args.family} test model{extra} to {args.directory}")
    return 0


def cmd_make_test_clip(args: argparse.Namespace) -> int:
    from freescale.config.output_place import check_output_place
    from freescale.config.parsing import parse_size
    from freescale.outputs.video.synthetic_clips import write_pan_clip

    height, width = parse_size(args.size)
    folder = os.path.dirname(os.path.abspath(args.path))
    if not os.path.exists(folder):
        os.makedirs(folder)  # a clip to try things on: its folder is made, as `mkdir -p` would
    check_output_place(args.path)
    write_pan_clip(args.path, width, height, args.frames, args.fps, audio=not args.no_audio)
    print(f"wrote a {width}x{height} clip of {args.frames} frames to {args.path}")
    return 0
