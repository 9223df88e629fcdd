"""Every option of a render, defined once, by section: RenderConfig's fields, the preset and resume keys,
the `freescale render` flags and the plan's defaults are all derived from `SECTIONS`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from freescale.models.families import BUILTIN_MODELS, FAMILIES
from freescale.models.lora_files import LoraFile
from freescale.models.schedulers import SCHEDULER_NAMES
from freescale.tiling.stages import Size
from freescale.tiling.temporal_windows import WINDOW_WEIGHTS

# Steps between mid-stage checkpoints (outputs/checkpoints.py; here so that the CLI's help needs no torch).
DEFAULT_CHECKPOINT_EVERY = 5
DEFAULT_NEGATIVE_PROMPT = "blurry, ugly, duplicate, poorly drawn, deformed, mosaic"
# FreeU (b1, b2, s1, s2) when nothing says which model family: SDXL's, the reference run script's.
FREEU_DEFAULT = FAMILIES["sdxl"].freeu_default
STAGE_RULES = ("double", "direct")
BLUR_MODES = ("3d", "2d")
DTYPES = ("fp32", "fp16", "bf16")
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
UPSAMPLE_MODES = ("latent", "rgb")
# How the last stage becomes an exact output size that is not a stage (freescale/outputs/fitted_strips.py).
FIT_MODES = ("crop", "resize")
VIDEO_CODECS = ("h264", "h265", "prores", "prores4444", "ffv1")
DEFAULT_FRAMES = 16  # AnimateDiff's training length
DEFAULT_FPS = 8.0  # AnimateDiff pipelines' usual export rate
# Frames per temporal window: the AnimateDiff adapters' training length (their positional tables are longer).
DEFAULT_WINDOW = 16
NOISE_MODES = ("random", "shuffle")
DEFAULT_CHUNK_FRAMES = 64  # four windows' worth: a longer clip is rendered chunk by chunk
DEFAULT_CHUNK_OVERLAP = 8

REQUIRED = object()  # the default of a RenderConfig field that has none
# Where an option's value goes.
RENDER = "render"  # a render setting: a flag, a preset, a recipe or a checkpoint gives it to build_config
DERIVED = "derived"  # a RenderConfig field that build_config computes (never given by the user)
COMMAND = "command"  # read by the command itself (where checkpoints go, how many workers ...)


@dataclass(frozen=True)
class Option:
    """One option. `help` is the flag's help without its "(default: ...)", which `help_text` adds (the CLI
    puts the preset names for `{presets}`)."""

    name: str  # the RenderConfig field, preset key and argparse dest
    help: str
    type: Any = str  # what argparse converts the flag with; build_config checks int and float fields
    default: Any = None  # RenderConfig's default (RENDER/DERIVED), the flag's default (COMMAND)
    annotation: Any = None  # the RenderConfig field's type; None: `type | None`
    flags: tuple[str, ...] | None = None  # None: ("--name-with-dashes",); (): no flag
    choices: tuple[Any, ...] | None = None
    switch: bool = False  # a store_true flag
    role: str = RENDER
    preset: bool = True  # a preset (or recipe) may set it (RENDER options only)
    field: bool = True  # a RenderConfig field (RENDER options; DERIVED ones always are)
    default_help: str | None = None  # the help's "(default: ...)" text; None: from `default`; "": none
    off_flag: tuple[str, str] | None = None  # (flag, help) of a store_false flag for the same option
    metavar: str | None = None
    repeat: bool = False  # the flag may be given again for one more value (argparse "append")

    @property
    def cli_flags(self) -> tuple[str, ...]:
        return ("--" + self.name.replace("_", "-"),) if self.flags is None else self.flags

    @property
    def is_field(self) -> bool:
        return self.role == DERIVED or (self.role == RENDER and self.field)

    @property
    def field_type(self) -> Any:
        if self.annotation is not None:
            return self.annotation
        return self.type | None if self.default is None else self.type

    def help_text(self) -> str:
        """The help with its "(default: ...)": defaults are documented where the option is defined."""
        if self.default_help == "":
            return self.help
        text = self.default_help
        if text is None:
            words = ((None, "none"), (False, "off"), (True, "on"))  # by identity: 0 is not "off"
            text = next((word for value, word in words if self.default is value), str(self.default))
        return f"{self.help} (default: {text})".lstrip()


@dataclass(frozen=True)
class Section:
    name: str
    title: str | None  # the CLI's option group; None: the command's own arguments
    options: tuple[Option, ...]
    commands: tuple[str, ...] = ("render", "video")  # the commands that show these flags


def _families_freeu() -> str:
    return "; ".join(f"{f.name} {','.join(map(str, f.freeu_default))}" for f in FAMILIES.values())


SECTIONS: tuple[Section, ...] = (
    Section("request", None, (
        Option("prompt", "what to render (may also come from the preset or recipe)", default=REQUIRED,
               annotation=str, flags=("prompt",), default_help=""),
        Option("from_recipe", "reproduce an earlier output from its recipe (the .json written beside it); "
               "flags override it", role=COMMAND, default_help=""),
        Option("preset", "a preset name ({presets}) or a YAML file; flags override it", role=COMMAND),
    )),
    Section("model", "model", (
        Option("model", f"{' or '.join(map(repr, BUILTIN_MODELS))} (built in, no download), a diffusers "
               "SDXL, SD1.5 or SD2.x directory, or one such .safetensors file", default="tiny"),
        Option("model_config", "for a .safetensors file: a diffusers-layout directory with the model's "
               "configs and tokenizers", default_help="the file's own directory"),
        Option("device", "cpu, cuda, cuda:1 ...", default_help="cuda if available, else cpu"),
        Option("dtype", "", choices=DTYPES, default_help="fp16 on GPU, fp32 on CPU"),
        Option("allow_pickle", "also load pickled weights (.bin, .ckpt, .pt: loading one can run code it "
               "carries); without it only .safetensors load", type=bool, default=False, switch=True,
               preset=False, default_help=""),
        Option("lora", "fuse a LoRA (diffusers or kohya .safetensors, of the model's family) into the "
               "weights at WEIGHT (default 1); repeat for more, fused in order", default=(),
               annotation=tuple[LoraFile, ...], metavar="FILE[:WEIGHT]", repeat=True, default_help="none"),
    )),
    Section("size", "size", (
        Option("size", "final size WIDTHxHEIGHT: a whole multiple of the native resolution, or for images "
               "any size, cut (--fit) from a last stage rounded up to multiples of 64", field=False,
               default_help="--scale times native"),
        Option("scale", "final size as a multiple of the native resolution", type=int, default=2,
               field=False),
        Option("stages", "explicit stage sizes, e.g. 1024,2048,4096 or 1024x768,2048x1536",
               default=REQUIRED, annotation=tuple[Size, ...], default_help="from --size and --stage-rule"),
        Option("stage_rule", "stages for a target: native, x2, x4 ... target; or native then target",
               default="double", choices=STAGE_RULES, field=False),
        Option("native_size", "the model's native resolution (read from the model): what stages grow from",
               type=int, default=REQUIRED, role=DERIVED, flags=()),
    )),
    Section("image_size", "exact image size (freescale render)", (
        Option("print_size", "final size as a print: WIDTHxHEIGHT with a unit (24x36in, 61x91.5cm, "
               "420x594mm) or A0-A6 (portrait), at --dpi (default 300), which the file's tag also says",
               flags=("--print",), field=False, metavar="SIZE"),
        Option("landscape", "turn --print so that its longer side is the width", type=bool, switch=True,
               field=False, default_help=""),
        Option("aspect", "final aspect WIDTH:HEIGHT (2:3, 16:9): the model's trained size nearest it, times "
               "--scale, cut to exactly that aspect", field=False, metavar="W:H"),
        Option("fit", "how the last stage becomes a --size, --print or --aspect that is not a stage: cut "
               "its centre, or resize it (Lanczos)", default="crop", choices=FIT_MODES),
        Option("image_size", "the written image's size where it is not the last stage's (from --size, "
               "--print or --aspect; recipes keep it as [height, width])", flags=(),
               annotation=tuple[int, int] | None, default_help="the last stage's"),
    ), commands=("render",)),
    Section("sampling", "sampling", (
        Option("steps", "", type=int, default=50),
        Option("guidance", "classifier-free guidance scale", type=float, default=7.5),
        Option("seed", "", type=int, default=0),
        Option("scheduler", f"the sampler: {', '.join(SCHEDULER_NAMES)}; exact on any number of workers",
               metavar="NAME", default_help="the model's own"),
        Option("negative_prompt", "", default=DEFAULT_NEGATIVE_PROMPT,
               default_help=repr(DEFAULT_NEGATIVE_PROMPT)),
    )),
    Section("method", "FreeScale method (SPEC section 3)", (
        Option("cosine_scale", "skip-residual exponent; <= 1.0 advised for 8k", type=float, default=2.0),
        Option("cosine_scale_bg", "exponent outside --mask", type=float, default=0.5),
        Option("dilate_tau", "dilate convs for steps i < tau", type=int, default=35),
        Option("restart", "fraction of steps skipped in upper stages", type=float, default=0.3),
        Option("fast_mode", "global attention over strided sub-grids", type=bool, default=False, switch=True),
        Option("freeu", "FreeU parameters b1,b2,s1,s2", default=FREEU_DEFAULT,
               annotation=tuple[float, float, float, float] | None, default_help="",
               off_flag=("--no-freeu", "turn FreeU off (default: on, with the model family's b1,b2,s1,s2: "
                         f"{_families_freeu()})")),
        Option("blur", "Gaussian over h, w and channels (reference) or spatial only", default="3d",
               choices=BLUR_MODES),
        Option("image", "image-to-image: a base image of the first stage's size"),
        Option("mask", "detail control mask, any size; non-zero = more detail"),
    )),
    Section("output", "output", (
        Option("output", ".png, .jpg or .tif path", default="freescale.png", flags=("-o", "--output")),
        Option("save_stages", "also write every stage", type=bool, default=False, switch=True,
               default_help=""),
        Option("overwrite", "replace an existing output", type=bool, default=False, switch=True,
               preset=False, default_help=""),
        Option("bit_depth", "bits per channel; 16 needs .tif, from the VAE's float output", type=int,
               default=8, choices=(8, 16)),
        Option("dpi", "print resolution tag for PNG/JPEG/TIFF; with --print also the pixels per inch",
               type=int, default_help="none; 300 with --print"),
        Option("pyramid", "TIFF only: add half-size reductions for fast viewing", type=bool, default=False,
               switch=True),
        Option("quiet", "no progress output", type=bool, default=False, switch=True, role=COMMAND,
               default_help=""),
    )),
    Section("checkpoints", "checkpoints and retries", (
        Option("checkpoint_dir", "keep checkpoints (each stage's latents, and every --checkpoint-every "
               "steps) in this directory; a rerun with the same settings continues from it", role=COMMAND),
        Option("checkpoint_every", "steps between mid-stage checkpoints", type=int,
               default=DEFAULT_CHECKPOINT_EVERY, role=COMMAND),
        Option("resume", "continue the render whose checkpoints are in DIR, with its settings; only output "
               "and cluster options may be given", role=COMMAND, metavar="DIR", default_help=""),
    )),
    Section("video", "video (freescale video)", (
        Option("motion_adapter", "AnimateDiff motion adapter: 'tiny' (built in, for the built-in models), a "
               "diffusers MotionAdapter directory or a .safetensors file",
               default_help="'tiny' with a built-in model; needed otherwise"),
        Option("frames", "frames of a text-to-video clip; more than --window are rendered in temporal "
               "windows", type=int, default_help=f"{DEFAULT_FRAMES}; with --input, the input's"),
        Option("fps", "frame rate of a text-to-video clip", type=float,
               default_help=f"{DEFAULT_FPS:g}; with --input, the input's frame timing"),
        Option("input", "video-to-video: upscale this clip (any format FFmpeg reads); it replaces the base "
               "stage, --scale and --size then mean the output's size, and frame timing and audio are the "
               "clip's", metavar="CLIP"),
        Option("strength", "how far the upper stages restart from noise, 0 < S <= 1: lower stays closer to "
               "the input (sets --restart to 1 - S)", type=float, field=False,
               default_help=f"1 - --restart ({1 - 0.3:g})"),
        Option("upsample", "between stages: resize each frame's latents, or decode, resize and encode it",
               default="latent", choices=UPSAMPLE_MODES),
        Option("window", "frames each motion module attends over at once (FreeNoise context windows; a clip "
               "of at most this many frames is one window)", type=int,
               default_help=f"{DEFAULT_WINDOW}, at most the adapter's positional table"),
        Option("window_stride", "frames between the starts of consecutive windows (a last window always ends "
               "at the last frame)", type=int, default=4),
        Option("window_weights", "how the windows' results are averaged per frame: pyramid weighs a window's "
               "middle frames most", default="pyramid", choices=WINDOW_WEIGHTS),
        Option("noise", "the noise of frames beyond the first window: random, or shuffle (FreeNoise: each "
               "run of --window-stride frames repeats a shuffle of the frames a window earlier)",
               default="random", choices=NOISE_MODES),
        Option("chunk_frames", "a longer clip is rendered in chunks of this many frames, one after another "
               "(memory stays that of one chunk)", type=int, default=DEFAULT_CHUNK_FRAMES),
        Option("chunk_overlap", "frames each chunk shares with the one before; they cross-fade from one "
               "to the other", type=int, default=DEFAULT_CHUNK_OVERLAP),
        Option("codec", "the output's codec: h264 or h265 for .mp4, prores or prores4444 for .mov, ffv1 for "
               ".mkv", choices=VIDEO_CODECS, default_help="the container's first"),
        Option("crf", "H.264/H.265 quality (lower is better)", type=int, default_help="18 for H.264, 20 for "
               "H.265"),
        Option("frame_size", "the output frames' size: the last stage's, or with --input the clip's times "
               "--scale or --size (the padded stage cropped back)", default=None, role=DERIVED, flags=(),
               annotation=tuple[int, int] | None),
    ), commands=("video",)),
    Section("upscale", "upscale (freescale upscale)", (
        Option("input_image", "the image to upscale, any size: PNG, JPEG, TIFF ... (8/16-bit gray or RGB, "
               "alpha, palette, CMYK); it replaces the base stage", flags=("input_image",), metavar="IMAGE",
               default_help=""),
        Option("caption_model", "a local image-to-text model directory (transformers: BLIP, Florence-2 ...) "
               "that writes the prompt when none is given; never downloads", metavar="DIR",
               default_help="none: an empty prompt"),
    ), commands=("upscale",)),
    Section("cluster", "cluster (Ray)", (
        Option("workers", "ranks to shard each upper stage over; 1 renders in this process", type=int,
               role=COMMAND, default_help="every GPU Ray sees, else 1"),
        Option("address", "Ray cluster address", role=COMMAND,
               default_help="ray.init() semantics: the cluster of `ray job submit` / RAY_ADDRESS if any, "
               "else an embedded local Ray"),
        Option("strategy", "placement group strategy for the workers", default="PACK", choices=STRATEGIES,
               role=COMMAND),
        Option("cfg_parallel", "split the guidance batch over two equal groups of workers; needs an even "
               "--workers and --guidance > 1", type=bool, default=False, switch=True, role=COMMAND),
        Option("max_retries", "after a worker dies, start fresh workers and go on from the last checkpoint "
               "(or from the start without --checkpoint-dir) up to this many times", type=int, default=2,
               role=COMMAND),
    )),
)  # fmt: skip


def command_sections(command: str, sections: tuple[Section, ...] = SECTIONS) -> tuple[Section, ...]:
    """The sections whose flags a command shows (`render` leaves out the video options)."""
    return tuple(s for s in sections if command in s.commands)


def section(name: str) -> Section:
    for s in SECTIONS:
        if s.name == name:
            return s
    raise KeyError(f"no option section {name!r}; sections: {', '.join(s.name for s in SECTIONS)}")


def all_options(sections: tuple[Section, ...] = SECTIONS) -> tuple[Option, ...]:
    return tuple(o for s in sections for o in s.options)


def option(name: str, sections: tuple[Section, ...] = SECTIONS) -> Option:
    for o in all_options(sections):
        if o.name == name:
            return o
    raise KeyError(f"no option {name!r}")


def default(name: str) -> Any:
    """An option's default, e.g. the plan's steps and restart when none are given."""
    return option(name).default


def render_keys(sections: tuple[Section, ...] = SECTIONS) -> tuple[str, ...]:
    """The render settings a user gives (flags, presets, recipes), in definition order."""
    return tuple(o.name for o in all_options(sections) if o.role == RENDER)


def preset_keys(sections: tuple[Section, ...] = SECTIONS) -> frozenset[str]:
    return frozenset(o.name for o in all_options(sections) if o.role == RENDER and o.preset)


def section_keys(name: str, sections: tuple[Section, ...] = SECTIONS) -> tuple[str, ...]:
    """The render settings of one section: 'output' gives what --resume may change and what a checkpoint
    does not depend on; 'model' what a batch keeps warm."""
    return render_keys(tuple(s for s in sections if s.name == name))


def field_options(sections: tuple[Section, ...] = SECTIONS) -> tuple[Option, ...]:
    """RenderConfig's fields in order: those without a default first (a dataclass needs that)."""
    fields = [o for o in all_options(sections) if o.is_field]
    return tuple(sorted(fields, key=lambda o: o.default is not REQUIRED))


def number_fields(sections: tuple[Section, ...] = SECTIONS) -> dict[str, type]:
    """The int and float settings build_config converts (YAML and recipes give them as any scalar)."""
    return {o.name: o.type for o in all_options(sections) if o.role == RENDER and o.is_field
            and o.type in (int, float)}  # fmt: skip
