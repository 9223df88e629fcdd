"""The `render` command's options (model, size, sampling, method, output, checkpoints, cluster) and how
flags, a preset, a recipe or a checkpoint's settings become one RenderConfig."""

from __future__ import annotations

import argparse

from freescale.config.render_config import (
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
from freescale.errors import ConfigError

_D = RenderConfig.__dataclass_fields__


def _default(name: str) -> str:
    return f"(default: {_D[name].default})"


def add_render_options(p: argparse.ArgumentParser) -> None:
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
    add_cluster_options(p)


def add_cluster_options(p: argparse.ArgumentParser) -> None:
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
    from freescale.outputs.checkpoints import resume_values

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
    from freescale.models.loading import resolve_model_source
    from freescale.models.native_resolution import native_size_of

    if getattr(args, "resume", None):
        values = _resume_values(args)
    else:
        values = load_recipe(args.from_recipe) if args.from_recipe else {}
        values.update(load_preset(args.preset) if args.preset else {})
        values.update({k: getattr(args, k) for k in RENDER_KEYS if getattr(args, k) is not None})
    source = resolve_model_source(values.get("model", "tiny"), values.get("model_config"))
    return build_config(values, native_size_of(source)), source
