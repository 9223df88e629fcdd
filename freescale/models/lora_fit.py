"""Whether a LoRA fits the model it is given with, from the LoRA's safetensors header and the model's
config files: its parts exist there (blocks, transformer depths, text encoders) and its widths match,
so a LoRA of another family (an SD1.5 LoRA on SDXL, say) is refused before anything loads."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from freescale.errors import ConfigError
from freescale.models.config_files import read_json_config
from freescale.models.families import family_of_source
from freescale.models.lora_files import LoraFile, LoraPair, lora_pairs
from freescale.models.weight_files import is_pickle_file

if TYPE_CHECKING:
    from freescale.models.model_source import ModelSource

_TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
# A UNet layer in diffusers names (kohya's underscores turned into dots where they separate indices).
_BLOCK = re.compile(
    r"^(?P<kind>down_blocks|up_blocks)\.(?P<block>\d+)\.(?P<part>attentions|resnets)\.(?P<index>\d+)\."
)
_MID = re.compile(r"^mid_block\.(?P<part>attentions|resnets)\.(?P<index>\d+)\.")
_DEPTH = re.compile(r"\.transformer_blocks\.(?P<depth>\d+)\.")
# Layers whose input is the block's width, and those whose input is the text conditioning.
_BLOCK_INPUT = (".attn1.to_q", ".attn1.to_k", ".attn1.to_v", ".attn2.to_q")
_CONTEXT_INPUT = (".attn2.to_k", ".attn2.to_v")
_TEXT_INPUT = (".self_attn.q_proj", ".self_attn.k_proj", ".self_attn.v_proj")


def _diffusers_name(pair: LoraPair) -> str:
    """kohya's `down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q` -> dotted diffusers names for
    the parts this check reads (SGM names such as input_blocks stay as they are: only widths are read)."""
    if not pair.kohya:
        return pair.module
    name = re.sub(r"_(\d+)(?=_|$)", r".\1", pair.module)
    name = re.sub(r"(?<=[a-z])_(attentions|resnets|transformer_blocks|attn1|attn2|self_attn)", r".\1", name)
    for layer in ("to_q", "to_k", "to_v", "q_proj", "k_proj", "v_proj"):
        name = name.replace(f"_{layer}", f".{layer}")
    return name.replace("down.blocks", "down_blocks").replace("up.blocks", "up_blocks")


def _per_block(value: Any, blocks: int) -> list[int]:
    return list(value) if isinstance(value, list | tuple) else [value] * blocks


def _unet_layout(unet: dict[str, Any]) -> dict[str, Any]:
    down_types, up_types = list(unet["down_block_types"]), list(unet["up_block_types"])
    widths = list(unet["block_out_channels"])
    depths = _per_block(unet.get("transformer_layers_per_block", 1), len(down_types))
    up_depths = unet.get("reverse_transformer_layers_per_block")
    up_depths = [max(_per_block(d, 1)) for d in up_depths] if up_depths else list(reversed(depths))
    return {
        "down_blocks": (down_types, widths, _per_block(unet.get("layers_per_block", 2), len(down_types)),
                        depths),
        "up_blocks": (up_types, list(reversed(widths)),
                      [n + 1 for n in reversed(_per_block(unet.get("layers_per_block", 2), len(up_types)))],
                      up_depths),
        "mid": (widths[-1], depths[-1]),
        "context": unet.get("cross_attention_dim"),
    }  # fmt: skip


def _fits_unet(name: str, pair: LoraPair, layout: dict[str, Any]) -> str | None:
    """Why the layer `name` is not in the UNet, or takes another input width; None: it fits."""
    width, depth = None, None
    block = _BLOCK.match(name)
    mid = _MID.match(name)
    if block:
        types, widths, per_block, depths = layout[block["kind"]]
        i, j = int(block["block"]), int(block["index"])
        if i >= len(types):
            return f"{block['kind']}.{i} does not exist (the model has {len(types)})"
        if block["part"] == "attentions" and "CrossAttn" not in types[i]:
            return f"{block['kind']}.{i} has no attentions ({types[i]})"
        if j >= per_block[i]:
            return f"{block['kind']}.{i}.{block['part']}.{j} does not exist"
        width, depth = widths[i], depths[i]
    elif mid:
        width, depth = layout["mid"]
        if mid["part"] == "attentions" and int(mid["index"]) > 0:
            return f"mid_block.attentions.{mid['index']} does not exist"
    found = _DEPTH.search(name)
    if found and depth is not None and int(found["depth"]) >= depth:
        return f"its transformer block {found['depth']} does not exist (the model's has {depth})"
    if name.endswith(_CONTEXT_INPUT) and layout["context"] is not None and pair.down[1] != layout["context"]:
        return f"it takes {pair.down[1]}-wide text conditioning, the model's is {layout['context']}-wide"
    if name.endswith(_BLOCK_INPUT) and width is not None and pair.down[1] != width:
        return f"it takes {pair.down[1]}-wide input, the model's layer takes {width}"
    return None


def _model_configs(source: ModelSource) -> dict[str, dict[str, Any]]:
    """The configs of the UNet and text encoders; built-in models build theirs (a toy model, no files)."""
    if source.kind == "tiny":
        from freescale.models.loading import builtin_pipeline

        pipe = builtin_pipeline(source.builtin_name)
        parts = {"unet": dict(pipe.unet.config)}
        for name in _TEXT_ENCODERS:
            if getattr(pipe, name, None) is not None:
                parts[name] = getattr(pipe, name).config.to_dict()
        return parts
    config_dir = source.path if source.kind == "directory" else source.config_dir
    assert config_dir is not None, "a resolved file source has a config directory"
    return {
        name: read_json_config(os.path.join(config_dir, name, "config.json"))
        for name in ("unet", *_TEXT_ENCODERS)
        if os.path.isfile(os.path.join(config_dir, name, "config.json"))
    }


def _misfit(pair: LoraPair, configs: dict[str, dict[str, Any]], layout: dict[str, Any]) -> str | None:
    if pair.component not in configs:
        return f"the model has no {pair.component}"
    name = _diffusers_name(pair)
    if pair.component == "unet":
        return _fits_unet(name, pair, layout)
    hidden = configs[pair.component].get("hidden_size")
    if name.endswith(_TEXT_INPUT) and hidden is not None and pair.down[1] != hidden:
        return f"it takes {pair.down[1]}-wide input, the model's {pair.component} is {hidden}-wide"
    return None


def check_loras_fit(loras: tuple[LoraFile, ...], source: ModelSource, model: str) -> None:
    """Every LoRA's every layer exists in the model with the widths it was trained for (pickles, which
    have no header to read, are left to diffusers)."""
    readable = [lora for lora in loras if not is_pickle_file(lora.path)]
    if not readable:
        return
    family = family_of_source(source)
    configs = _model_configs(source)
    layout = _unet_layout(configs["unet"])
    for lora in readable:
        for pair in lora_pairs(lora.path):
            why = _misfit(pair, configs, layout)
            if why is not None:
                raise ConfigError(
                    f"--lora {lora.path} does not fit the {family.name} model {model!r}: its "
                    f"{pair.component} layer {pair.module!r}: {why} (a LoRA of another model family?)"
                )
