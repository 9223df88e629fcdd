"""The model families freescale renders (SDXL, SD1.5, SD2.x) and how to tell a model's family from its
config files or its safetensors header alone; imports nothing heavy, so config code can use it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from freescale.errors import ConfigError
from freescale.models.config_files import read_json_config
from freescale.models.safetensors_header import tensor_names

if TYPE_CHECKING:
    from freescale.models.model_source import ModelSource


@dataclass(frozen=True)
class ModelFamily:
    name: str  # "sdxl" | "sd15" | "sd21"
    description: str
    # FreeU (b1, b2, s1, s2) as published by the FreeU authors for this family.
    freeu_default: tuple[float, float, float, float]
    text_encoders: int
    pipeline_class: str  # the diffusers pipeline class (model_index.json `_class_name`)
    # A tensor-name prefix only this family's original-layout single files have.
    single_file_marker: str
    # The built-in tiny model of this family ("--model NAME"), None when there is none.
    builtin_model: str | None
    # UNet down blocks: every checkpoint of a family has its topology (the built-in ones too, at toy
    # widths), so bands align to 2 ** (down_blocks - 1) latent rows.
    down_blocks: int


FAMILIES: dict[str, ModelFamily] = {
    f.name: f
    for f in (
        ModelFamily(
            name="sdxl",
            description="Stable Diffusion XL",
            freeu_default=(1.1, 1.2, 0.6, 0.4),
            text_encoders=2,
            pipeline_class="StableDiffusionXLPipeline",
            single_file_marker="conditioner.embedders.1.",
            builtin_model="tiny",
            down_blocks=3,
        ),
        ModelFamily(
            name="sd15",
            description="Stable Diffusion 1.x",
            freeu_default=(1.5, 1.6, 0.9, 0.2),
            text_encoders=1,
            pipeline_class="StableDiffusionPipeline",
            single_file_marker="cond_stage_model.transformer.",
            builtin_model="tiny-sd15",
            down_blocks=4,
        ),
        ModelFamily(
            name="sd21",
            description="Stable Diffusion 2.x",
            freeu_default=(1.4, 1.6, 0.9, 0.2),
            text_encoders=1,
            pipeline_class="StableDiffusionPipeline",
            single_file_marker="cond_stage_model.model.",
            builtin_model=None,
            down_blocks=4,
        ),
    )
}

# Built-in model name -> its family, e.g. "tiny-sd15" -> sd15.
BUILTIN_MODELS: dict[str, ModelFamily] = {f.builtin_model: f for f in FAMILIES.values() if f.builtin_model}
# SD2.x conditions on OpenCLIP-H (1024 wide); SD1.x on CLIP-L (768 wide).
_SD2_TEXT_WIDTH = 1024


def allowed_families() -> str:
    return ", ".join(FAMILIES)


def family_named(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise ConfigError(f"model family {name!r} is not known; use one of {allowed_families()}")
    return FAMILIES[name]


def _is_sd2_directory(directory: str) -> bool:
    unet_config = os.path.join(directory, "unet", "config.json")
    if os.path.isfile(unet_config):
        return read_json_config(unet_config).get("cross_attention_dim") == _SD2_TEXT_WIDTH
    text_config = os.path.join(directory, "text_encoder", "config.json")
    return os.path.isfile(text_config) and read_json_config(text_config).get("hidden_size") == _SD2_TEXT_WIDTH


def family_of_directory(directory: str) -> ModelFamily:
    """From model_index.json's pipeline class; SD1.x and SD2.x share one, so the text width decides."""
    class_name = read_json_config(os.path.join(directory, "model_index.json")).get("_class_name")
    if class_name == FAMILIES["sdxl"].pipeline_class:
        return FAMILIES["sdxl"]
    if class_name == FAMILIES["sd15"].pipeline_class:
        return FAMILIES["sd21"] if _is_sd2_directory(directory) else FAMILIES["sd15"]
    allowed = ", ".join(sorted({f.pipeline_class for f in FAMILIES.values()}))
    raise ConfigError(
        f"model directory {directory!r} holds a {class_name!r} pipeline; expected one of {allowed} "
        f"(families {allowed_families()})"
    )


def family_of_single_file(path: str) -> ModelFamily:
    """From the file's tensor names: each family's text encoder has its own original-layout prefix."""
    names = tensor_names(path)
    for family in FAMILIES.values():
        if any(name.startswith(family.single_file_marker) for name in names):
            return family
    markers = ", ".join(f"{f.name} '{f.single_file_marker}*'" for f in FAMILIES.values())
    raise ConfigError(
        f"model file {path!r} is not an original-layout checkpoint of a known family; "
        f"expected text-encoder tensors of one of: {markers}"
    )


def family_of_source(source: ModelSource) -> ModelFamily:
    """The family of a checked model source, from config files or the safetensors header; loads nothing."""
    if source.kind == "tiny":
        name = source.builtin_name
        if name not in BUILTIN_MODELS:
            raise ConfigError(
                f"built-in model {name!r} does not exist; use one of {', '.join(BUILTIN_MODELS)}"
            )
        return BUILTIN_MODELS[name]
    if source.kind == "directory" and source.path is not None:
        return family_of_directory(source.path)
    if source.kind == "single_file" and source.path is not None:
        if not source.path.endswith(".safetensors") and source.config_dir is not None:
            return family_of_directory(source.config_dir)  # a pickle (--allow-pickle): no header to read
        return family_of_single_file(source.path)
    raise ConfigError(f"model source {source!r} is not valid; build it with resolve_model_source")
