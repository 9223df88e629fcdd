"""`RenderConfig`: one frozen, validated description of a render, built from CLI flags and YAML presets.

Its fields are generated from the option definition (options.py); everything a user can get wrong is
checked here, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

from freescale.config.image_size import MAX_SIDE, check_image_size, image_stages, refuse_image_size_keys
from freescale.config.lora_option import parse_loras
from freescale.config.options import (
    BLUR_MODES,
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_NEGATIVE_PROMPT,
    DTYPES,
    FREEU_DEFAULT,
    NOISE_MODES,
    REQUIRED,
    SECTIONS,
    STAGE_RULES,
    UPSAMPLE_MODES,
    Option,
    Section,
    field_options,
    number_fields,
)
from freescale.config.output_place import check_output_place
from freescale.config.parsing import parse_freeu, parse_number, parse_size, parse_stages, resolve_stages
from freescale.config.presets import (
    PRESET_KEYS,
    check_text,
    load_preset,
    load_recipe,
    preset_names,
    recipe_values,
)
from freescale.errors import ConfigError
from freescale.models.schedulers import SCHEDULER_NAMES
from freescale.tiling.stages import Size
from freescale.tiling.temporal_windows import WINDOW_WEIGHTS

if TYPE_CHECKING:
    from freescale.models.families import ModelFamily

OUTPUT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
# Importers of this module's former contents find them here.
__all__ = [
    "BLUR_MODES", "DEFAULT_CHECKPOINT_EVERY", "DEFAULT_NEGATIVE_PROMPT", "FREEU_DEFAULT", "OUTPUT_EXTENSIONS",
    "PRESET_KEYS", "STAGE_RULES", "RenderConfig", "build_config", "check_output_path", "check_outputs_free",
    "format_size", "load_preset", "load_recipe", "parse_freeu", "parse_size", "parse_stages", "preset_names",
    "recipe_values", "resolve_stages",
]  # fmt: skip


class _RenderConfigMethods:
    """What RenderConfig adds to its generated fields."""

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def is_video(self) -> bool:
        return self.motion_adapter is not None

    @property
    def restart_step(self) -> int:
        return int(self.restart * self.steps)

    def replace(self, **changes: Any) -> RenderConfig:
        return dataclasses.replace(self, **changes)


def _field(o: Option) -> tuple:
    if o.default is REQUIRED:
        return (o.name, o.field_type)
    return (o.name, o.field_type, dataclasses.field(default=o.default))


def config_class(sections: tuple[Section, ...] = SECTIONS) -> type:
    """The frozen dataclass of a render: one field per RenderConfig field of the definition, with its type
    and default (recipes and checkpoints store its `dataclasses.asdict`)."""
    cls = dataclasses.make_dataclass(
        "RenderConfig",
        [_field(o) for o in field_options(sections)],
        bases=(_RenderConfigMethods,),
        frozen=True,
    )
    cls.__module__ = __name__  # where pickle (Ray) finds it
    cls.__doc__ = "A whole render: stages are resolved pixel sizes (height, width), base first."
    return cls


RenderConfig = config_class()


def format_size(size: Size) -> str:
    """(h, w) -> 'WxH', the way users write sizes."""
    return f"{size[1]}x{size[0]}"


def _validate(c: RenderConfig) -> None:
    for what, text in (("the prompt", c.prompt), ("--negative-prompt", c.negative_prompt)):
        check_text(text, what)  # invalid UTF-8 or a NUL: one line, before any model loads
    if not c.prompt.strip() and c.input is None and c.input_image is None:
        raise ConfigError("the prompt is empty; give the text to render")
    if c.native_size < 64 or c.native_size % 8:
        raise ConfigError(f"native size {c.native_size} is not a positive multiple of 8")
    _validate_stages(c.stages, c.native_size)
    if c.steps < 1:
        raise ConfigError(f"--steps {c.steps} must be at least 1")
    if c.guidance < 0:
        raise ConfigError(f"--guidance {c.guidance} must be >= 0")
    if not 0.0 <= c.restart < 1.0:
        raise ConfigError(f"--restart {c.restart} must be in [0, 1): the fraction of steps to skip")
    if c.dilate_tau < 0:
        raise ConfigError(f"--dilate-tau {c.dilate_tau} must be >= 0 (a step index)")
    for name in ("cosine_scale", "cosine_scale_bg"):
        if getattr(c, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(c, name)} must be >= 0")
    if c.freeu is not None and len(c.freeu) != 4:
        raise ConfigError(f"freeu {c.freeu} must be four numbers b1, b2, s1, s2")
    if c.blur not in BLUR_MODES:
        raise ConfigError(f"--blur {c.blur!r} is not one of {', '.join(BLUR_MODES)}")
    if c.dtype is not None and c.dtype not in DTYPES:
        raise ConfigError(f"--dtype {c.dtype!r} is not one of {', '.join(DTYPES)}")
    if c.scheduler is not None and c.scheduler not in SCHEDULER_NAMES:
        raise ConfigError(f"--scheduler {c.scheduler!r} is not one of {', '.join(SCHEDULER_NAMES)}")
    for flag, path in (("--image", c.image), ("--mask", c.mask)):
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{flag} {path}: no such file")
    if c.image is not None and not c.is_video:  # a video refuses --image below
        _check_base_image(c.image, c.stages[0])
    if c.mask is not None:
        _open_image_header(c.mask, "--mask")
    if c.is_video:
        _validate_video(c)
        return
    check_output_path(c.output)
    check_image_size(c.image_size, c.fit, c.stages[-1])
    is_tiff = os.path.splitext(c.output)[1].lower() in (".tif", ".tiff")
    if c.bit_depth not in (8, 16):
        raise ConfigError(f"--bit-depth {c.bit_depth} is not 8 or 16")
    if c.input_image is not None:  # `freescale upscale`: its input, 16-bit PNG, alpha, caption model
        from freescale.config.upscale_config import check_upscale

        check_upscale(c)
    elif c.bit_depth == 16 and not is_tiff:
        raise ConfigError(f"--bit-depth 16 needs a .tif/.tiff output, not {c.output!r}")
    if c.pyramid and not is_tiff:
        raise ConfigError(f"--pyramid needs a .tif/.tiff output, not {c.output!r}")
    if c.dpi is not None and not 1 <= c.dpi <= 100000:
        raise ConfigError(f"--dpi {c.dpi} must be between 1 and 100000")


def _validate_video(c: RenderConfig) -> None:
    from freescale.config.video_outputs import check_video_output

    for flag, value in (("--image", c.image), ("--save-stages", c.save_stages), ("--dpi", c.dpi),
                        ("--pyramid", c.pyramid), ("--fit", c.fit != "crop")):  # fmt: skip
        if value:
            instead = "; use --input CLIP" if flag == "--image" else ""
            raise ConfigError(f"{flag} applies to images, not to `freescale video`{instead}")
    if c.frames is None or c.frames < 1:
        raise ConfigError(f"--frames {c.frames} must be at least 1")
    if c.input is None and (c.fps is None or not 0 < c.fps <= 1000):
        raise ConfigError(f"--fps {c.fps} must be a frame rate in (0, 1000]")
    if c.crf is not None and not 0 <= c.crf <= 51:
        raise ConfigError(f"--crf {c.crf} must be in 0..51")
    if c.upsample not in UPSAMPLE_MODES:
        raise ConfigError(f"--upsample {c.upsample!r} is not one of {', '.join(UPSAMPLE_MODES)}")
    if c.window is None or c.window < 1:
        raise ConfigError(f"--window {c.window} must be at least 1 frame")
    if not 1 <= c.window_stride <= c.window:
        raise ConfigError(f"--window-stride {c.window_stride} must be between 1 and --window ({c.window})")
    if c.window_weights not in WINDOW_WEIGHTS:
        raise ConfigError(f"--window-weights {c.window_weights!r} is not one of {', '.join(WINDOW_WEIGHTS)}")
    if c.chunk_frames < 1:
        raise ConfigError(f"--chunk-frames {c.chunk_frames} must be at least 1")
    if not 0 <= c.chunk_overlap < c.chunk_frames:
        allowed = f"at least 0 and less than --chunk-frames ({c.chunk_frames})"
        raise ConfigError(f"--chunk-overlap {c.chunk_overlap} must be {allowed}")
    if c.noise not in NOISE_MODES:
        raise ConfigError(f"--noise {c.noise!r} is not one of {', '.join(NOISE_MODES)}")
    if c.frame_size is None or any(f > s for f, s in zip(c.frame_size, c.stages[-1], strict=True)):
        raise ConfigError(f"frame size {c.frame_size} must be given and fit in the last stage")
    # Existing outputs are refused by the command (check_outputs_free), as for images.
    check_video_output(c.output, c.codec, c.bit_depth, overwrite=True)
    check_output_place(c.output)  # not a directory, in a folder that takes new files


def _validate_stages(stages: tuple[Size, ...], native: int) -> None:
    if not stages:
        raise ConfigError("no stages: give --size or --stages")
    for h, w in stages:
        if h <= 0 or w <= 0 or h % 64 or w % 64:
            raise ConfigError(f"stage size {format_size((h, w))} is not a multiple of 64 on each side")
        if h > MAX_SIDE or w > MAX_SIDE:  # before anything enumerates windows or tiles of it
            raise ConfigError(
                f"stage size {format_size((h, w))} is larger than the {MAX_SIDE} px a side the renderer "
                "supports"
            )
    for previous, stage in zip(stages, stages[1:], strict=False):
        larger = stage[0] >= previous[0] and stage[1] >= previous[1] and stage != previous
        if not larger:
            raise ConfigError(
                f"stage {format_size(stage)} is not larger than the previous stage {format_size(previous)}"
            )
    for h, w in stages[1:]:
        if h < native or w < native:
            raise ConfigError(
                f"stage {format_size((h, w))} is smaller than the model's native {native} px on a side; "
                "every stage after the base needs at least the native size"
            )


def _open_image_header(path: str, flag: str) -> tuple[int, int]:
    """(width, height) of an input image that is within the limits, of a supported mode and whole."""
    from freescale.config.input_images import check_image

    return check_image(path, flag)


def _check_base_image(path: str, base: Size) -> None:
    width, height = _open_image_header(path, "--image")
    if (height, width) != tuple(base):
        raise ConfigError(
            f"--image {path} is {width}x{height} but the first stage is {format_size(base)}; "
            "resize it or set --stages so the first stage matches"
        )


def check_output_path(path: str) -> None:
    ext = os.path.splitext(path)[1].lower()
    if ext not in OUTPUT_EXTENSIONS:
        raise ConfigError(f"output {path!r} has extension {ext!r}; allowed: {', '.join(OUTPUT_EXTENSIONS)}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"output {path!r}: directory {directory} does not exist")
    check_output_place(path)  # not a directory, in a folder that takes new files


def check_outputs_free(config: RenderConfig, stage_paths: list[str]) -> None:
    """Refuse, before any work, to replace files the user already has (unless --overwrite): the images
    and their recipe sidecars (out.png -> out.png.json)."""
    if config.overwrite:
        return
    for image in [config.output, *stage_paths]:
        for path in (image, image + ".json"):
            if os.path.exists(path):
                raise ConfigError(f"output {path!r} already exists; pass --overwrite to replace it")


def build_config(values: dict[str, Any], native_size: int, family: ModelFamily | None = None) -> RenderConfig:
    """Make a RenderConfig from merged preset and flag values (flags already override the preset).

    FreeU left unset (or `true`) takes the model family's published values: `family`, else that of a
    built-in `model` ("tiny-sd15" is SD1.5), else SDXL's (callers with a model path pass its family)."""
    from freescale.config.video_config import refuse_video_keys, video_stages

    values = {k: v for k, v in values.items() if v is not None}
    if values.get("motion_adapter") is not None:
        refuse_image_size_keys(values)
        stages = video_stages(values, native_size)
    elif values.get("input_image") is not None:
        from freescale.config.upscale_config import upscale_image_stages

        stages = upscale_image_stages(values, native_size)
    else:
        refuse_video_keys(values)
        stages = image_stages(values, native_size)
    if family is None:
        from freescale.models.families import BUILTIN_MODELS

        family = BUILTIN_MODELS.get(values.get("model", "tiny"))
    freeu_default = FREEU_DEFAULT if family is None else family.freeu_default
    values["freeu"] = parse_freeu(values.get("freeu", True), freeu_default)
    values["lora"] = parse_loras(values.get("lora"), bool(values.get("allow_pickle")))
    for key, kind in number_fields().items():
        if key in values:
            values[key] = parse_number(values[key], f"--{key.replace('_', '-')}", kind)
    if "prompt" not in values:
        raise ConfigError("no prompt: give the text to render")
    return RenderConfig(stages=stages, native_size=native_size, **values)
