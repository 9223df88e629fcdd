"""The `render` command's options, made from the one option definition (freescale.config.options), and how
flags, a preset, a recipe or a checkpoint's settings become one RenderConfig."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from freescale.config.options import (
    COMMAND,
    REQUIRED,
    SECTIONS,
    Option,
    Section,
    option,
    render_keys,
    section_keys,
)
from freescale.config.presets import load_preset, load_recipe, preset_names
from freescale.config.render_config import build_config
from freescale.errors import ConfigError

# Every render setting a flag may give: what a preset may set, and --overwrite.
RENDER_KEYS = tuple(sorted(render_keys()))
# What --resume may change: where and how the outputs are written (the output section).
RESUME_KEYS = section_keys("output")
# Command options --resume refuses (the render's settings come from its checkpoint).
_NOT_WITH_RESUME = ("from_recipe", "preset", "checkpoint_dir")


def add_option(group: Any, o: Option, *, resolved: bool = False, **overrides: Any) -> None:
    """Add `o`'s flag(s) to a parser or argument group. A render setting's flag defaults to None, so that
    a preset, a recipe or RenderConfig's default fills it in; `resolved` gives it the definition's default
    instead (for commands without presets, as `plan`). `overrides` replace argparse keywords."""
    flags = o.cli_flags
    if not flags:
        raise ValueError(f"option {o.name!r} has no command-line flag")
    help_text = o.help_text()
    if "{presets}" in help_text:
        help_text = help_text.replace("{presets}", ", ".join(preset_names()))
    kwargs: dict[str, Any] = {"help": help_text}
    if flags[0].startswith("-"):
        kwargs["dest"] = o.name
    else:
        kwargs["nargs"] = "?"
    if o.metavar:
        kwargs["metavar"] = o.metavar
    if o.switch:
        kwargs["action"] = "store_true"
    elif o.repeat:
        kwargs["action"] = "append"
    else:
        if o.type is not str:
            kwargs["type"] = o.type
        if o.choices is not None:
            kwargs["choices"] = list(o.choices)
    if o.role == COMMAND or resolved:
        kwargs["default"] = None if o.default is REQUIRED else o.default
    elif flags[0].startswith("-"):
        kwargs["default"] = None
    kwargs.update(overrides)
    group.add_argument(*flags, **kwargs)
    if o.off_flag is not None:
        off, off_help = o.off_flag
        group.add_argument(
            off, dest=o.name, action="store_false", default=kwargs.get("default"), help=off_help
        )


def add_section(p: argparse.ArgumentParser, s: Section) -> None:
    group = p if s.title is None else p.add_argument_group(s.title)
    for o in s.options:
        if o.cli_flags:
            add_option(group, o)


def add_options(p: Any, names: Iterable[str], *, resolved: bool = False, **overrides: dict) -> None:
    """Some options by name, e.g. the render options `plan` mirrors; `overrides[name]` replaces argparse
    keywords of one of them (plan's --model defaults to sdxl)."""
    for name in names:
        add_option(p, option(name), resolved=resolved, **overrides.get(name, {}))


def add_render_options(p: argparse.ArgumentParser, sections: tuple[Section, ...] = SECTIONS) -> None:
    """Every section's flags, each section an argument group."""
    for s in sections:
        add_section(p, s)


def add_cluster_options(p: argparse.ArgumentParser) -> None:
    add_section(p, next(s for s in SECTIONS if s.name == "cluster"))


def _flag(name: str) -> str:
    o = option(name)
    return o.cli_flags[-1] if o.cli_flags[0].startswith("-") else name


def _resume_values(args: argparse.Namespace) -> dict:
    from freescale.outputs.checkpoints import resume_values

    given = (*RESUME_KEYS, "allow_pickle")
    others = [k for k in RENDER_KEYS if getattr(args, k, None) is not None and k not in given]
    others += [k for k in _NOT_WITH_RESUME if getattr(args, k) is not None]
    if others:
        raise ConfigError(f"--resume takes the render's settings from {args.resume}; drop "
                          f"{', '.join(_flag(k) for k in others)}")  # fmt: skip
    values = resume_values(args.resume)
    # Trust in pickled weights is never taken from a file (a checkpoint may come from someone else).
    values.pop("allow_pickle", None)
    values.update({k: getattr(args, k) for k in given if getattr(args, k) is not None})
    return values


def _check_command(values: dict, command: str, source) -> None:
    """`freescale video` renders with a motion adapter (the built-in one for a built-in model);
    `freescale render` refuses a video's settings (a video recipe, say)."""
    from freescale.models.motion_adapter import TINY_MOTION_ADAPTER

    if command == "video" and values.get("motion_adapter") is None:
        if source.kind != "tiny":
            raise ConfigError("--motion-adapter is needed: a MotionAdapter directory or .safetensors file")
        values["motion_adapter"] = TINY_MOTION_ADAPTER
    if command == "render" and values.get("motion_adapter") is not None:
        raise ConfigError(
            "these settings are a video's (--motion-adapter); render them with `freescale video`"
        )


def config_from_args(args: argparse.Namespace):
    """Preset, then flags (or a checkpoint's settings with --resume); returns (config, model source).
    FreeU defaults to the model family's values. Loads nothing heavy."""
    from freescale.config.lora_option import parse_loras
    from freescale.models.families import family_of_source
    from freescale.models.model_source import resolve_model_source
    from freescale.models.native_resolution import native_size_of

    if getattr(args, "resume", None):
        values = _resume_values(args)
    else:
        values = load_recipe(args.from_recipe) if args.from_recipe else {}
        values.update(load_preset(args.preset) if args.preset else {})
        values.update({k: getattr(args, k) for k in RENDER_KEYS if getattr(args, k, None) is not None})
    allow_pickle = bool(values.get("allow_pickle"))
    lora = parse_loras(values.get("lora"), allow_pickle)
    source = resolve_model_source(
        values.get("model", "tiny"), values.get("model_config"), allow_pickle, lora=lora
    )
    _check_command(values, getattr(args, "command", "render"), source)
    return build_config(values, native_size_of(source), family=family_of_source(source)), source
