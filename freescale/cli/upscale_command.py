"""`freescale upscale IMAGE [PROMPT]`: the user's own image to any size (--scale N times it, --size WxH,
--print SIZE at --dpi), through the same checks, plan, workers and checkpoints as `freescale render`."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from freescale.cli import interrupts
from freescale.cli.render_command import run_render
from freescale.cli.render_options import add_option, config_from_args
from freescale.config.options import SECTIONS, option
from freescale.errors import ConfigError

# Render options an upscale plans itself (the input decides the base stage, the aspect and the stages;
# --strength is its --restart).
_NOT_SHOWN = frozenset({"stages", "aspect", "image", "restart", "input_image"})
_HELP = {
    "scale": {"type": float, "help": "the output is N times the input's size (any number > 0: 2, 1.5 ...)"},
    "size": {"help": "the output's exact size WIDTHxHEIGHT, any; the input's aspect is kept and its centre "
             "cut (or with --fit resize the whole input resized to it)"},
    "fit": {"help": "how the last stage becomes the exact size: cut its centre (the input's aspect kept), "
            "or resize it (Lanczos; the aspect changes to the asked one)"},
    "strength": {"help": "fidelity: how far the upper stages restart from noise, 0 < S <= 1; lower keeps the "
                 "input's details, higher invents more (sets --restart to 1 - S)"},
    "cosine_scale": {"help": "fidelity: how quickly each upper stage lets go of the upscaled input (the skip "
                     "residual's exponent); lower follows the input longer"},
    "bit_depth": {"help": "bits per channel; 16 needs .png or .tif (default: the input's: 16 for a 16-bit "
                  "input, else 8)"},
}  # fmt: skip


def add_upscale_command(commands: Any) -> None:
    """The `upscale` subcommand: IMAGE, then `freescale render`'s options that apply, --strength and
    --caption-model."""
    parser = commands.add_parser(
        "upscale",
        help="upscale your own image to any size",
        description="Upscale IMAGE with FreeScale: it is fitted to the model's native area as the base "
        "stage, then doubled stage by stage to --scale N times its size, --size WxH or --print SIZE at "
        "--dpi, exactly. Every option falls back to the preset, then to its default.",
        epilog=interrupts.EXIT_CODES,
        formatter_class=interrupts.ExitCodesFormatter,
    )
    add_option(parser, option("input_image"))
    for s in SECTIONS:
        if s.name == "video":  # only --strength, shown with the method
            continue
        group = parser if s.title is None else parser.add_argument_group(s.title)
        for o in s.options:
            if o.cli_flags and o.name not in _NOT_SHOWN:
                add_option(group, o, **_HELP.get(o.name, {}))
        if s.name == "method":
            add_option(group, option("strength"), **_HELP["strength"])
    parser.set_defaults(run=cmd_upscale)


def captioned(config, progress):
    """The config with the caption model's prompt where none was given (said in the log)."""
    from freescale.config.user_image import read_user_image
    from freescale.models.image_captions import caption_image

    if config.prompt.strip() or config.caption_model is None:
        return config
    rgb = np.round(read_user_image(config.input_image).unit_rgb() * 255).astype(np.uint8)
    caption = caption_image(config.caption_model, rgb)
    progress.note(f"caption from {config.caption_model}: {caption!r}")
    return config.replace(prompt=caption)


def cmd_upscale(args: argparse.Namespace) -> int:
    from freescale.config.user_image import user_image_facts
    from freescale.progress import Progress

    if args.input_image is None and not args.from_recipe and not args.resume:
        raise ConfigError("give IMAGE, the picture to upscale (or --from-recipe of an upscale)")
    config, source = config_from_args(args)
    if config.input_image is None:
        raise ConfigError("the recipe is not an upscale's (it has no input image); give IMAGE")
    progress = Progress(quiet=args.quiet)
    for note in user_image_facts(config.input_image).notes:
        progress.note(note)
    return run_render(args, config, source, prepare=lambda c: captioned(c, progress))
