"""AnimateDiff motion adapters: the built-in tiny ones, loading `--motion-adapter` values offline, and the
motion UNet (diffusers `UNetMotionModel`) built from a loaded model's image UNet and an adapter."""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING

import torch
from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers
from diffusers.models.unets.unet_motion_model import MotionAdapter, UNetMotionModel
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from freescale.errors import ConfigError

if TYPE_CHECKING:
    from freescale.models.loading import LoadedModel

TINY_MOTION_ADAPTER = "tiny"
MOTION_ADAPTER_DIR = "motion_adapter"  # where make-test-model --motion writes the tiny adapter
# The temporal attention's positional table: the most frames one motion-UNet call can take (its window).
# diffusers' MotionAdapter default is 32 positions, as in AnimateDiff v1-5-2 / v1-5-3 and SDXL beta (v1-5
# has 24); those adapters were trained on 16-frame clips. The tiny adapters take 16.
TINY_MAX_FRAMES = 16
_PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
# AnimateDiff's own settings, for what a bare state dict does not show (heads split inside a Linear).
_ANIMATEDIFF_HEADS = 8
_ANIMATEDIFF_NORM_GROUPS = 32
_CONFIG_METADATA_KEY = "motion_adapter_config"  # our single-file exports carry the config in the header

# Family name -> the built-in adapter's settings: the tiny image UNet's block widths and layers per block.
_TINY_ADAPTERS: dict[str, dict] = {
    "sd15": dict(block_out_channels=(32, 64, 128, 128), use_motion_mid_block=True),
    # As the SDXL beta adapter: three levels, no motion module in the mid block.
    "sdxl": dict(block_out_channels=(32, 64, 128), use_motion_mid_block=False),
}


def build_tiny_motion_adapter(family: str, seed: int = 0) -> MotionAdapter:
    """The family's built-in motion adapter, fp32 weights from `seed` only (the global RNG is untouched)."""
    if family not in _TINY_ADAPTERS:
        allowed = ", ".join(_TINY_ADAPTERS)
        raise ConfigError(f"family {family!r} has no built-in tiny motion adapter; use a model of {allowed}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapter = MotionAdapter(
            motion_layers_per_block=2,
            motion_num_attention_heads=2,
            motion_norm_num_groups=8,
            motion_max_seq_length=TINY_MAX_FRAMES,
            **_TINY_ADAPTERS[family],
        )
    return adapter.eval()


def save_tiny_motion_adapter(directory: str, family: str, seed: int = 0) -> None:
    """The built-in adapter in diffusers layout: config.json + diffusion_pytorch_model.safetensors."""
    build_tiny_motion_adapter(family, seed).save_pretrained(directory, safe_serialization=True)


def save_motion_adapter_file(adapter: MotionAdapter, path: str) -> None:
    """A diffusers-layout state dict as one .safetensors file, its config in the header's metadata."""
    config = {k: v for k, v in adapter.config.items() if not k.startswith("_")}
    state = {k: v.contiguous() for k, v in adapter.state_dict().items()}
    save_file(state, path, metadata={_CONFIG_METADATA_KEY: json.dumps(config)})


def _count(keys: list[str], pattern: str) -> int:
    """How many distinct indices the one group of `pattern` takes among the keys."""
    return len({m.group(1) for k in keys if (m := re.match(pattern, k))})


def _inferred_config(state: dict[str, torch.Tensor], path: str) -> dict:
    """The adapter's config read off its state dict's names and shapes; what they cannot show (the heads
    and norm groups) is AnimateDiff's 8 and 32, so another adapter needs its config (a directory)."""
    keys = list(state)
    levels = _count(keys, r"down_blocks\.(\d+)\.motion_modules\.")
    if levels == 0:
        raise ConfigError(f"motion adapter {path}: no down_blocks.N.motion_modules weights in it")
    widths = tuple(state[f"down_blocks.{i}.motion_modules.0.norm.weight"].shape[0] for i in range(levels))
    per_block = [_count(keys, rf"down_blocks\.{i}\.motion_modules\.(\d+)\.") for i in range(levels)]
    layers = [
        _count(keys, rf"down_blocks\.{i}\.motion_modules\.0\.transformer_blocks\.(\d+)\.")
        for i in range(levels)
    ]
    pe = [v for k, v in state.items() if k.endswith("pos_embed.pe")]
    config = dict(
        block_out_channels=widths,
        motion_layers_per_block=tuple(per_block),
        motion_transformer_layers_per_block=tuple(layers),
        motion_num_attention_heads=_ANIMATEDIFF_HEADS,
        motion_norm_num_groups=_ANIMATEDIFF_NORM_GROUPS,
        motion_max_seq_length=pe[0].shape[1] if pe else 32,
        use_motion_mid_block=any(k.startswith("mid_block.") for k in keys),
        conv_in_channels=state["conv_in.weight"].shape[1] if "conv_in.weight" in state else None,
    )
    if config["use_motion_mid_block"]:
        config["motion_mid_block_layers_per_block"] = _count(keys, r"mid_block\.motion_modules\.(\d+)\.")
        config["motion_transformer_layers_per_mid_block"] = _count(
            keys, r"mid_block\.motion_modules\.0\.transformer_blocks\.(\d+)\."
        )
    return config


def _original_max_frames(state: dict[str, torch.Tensor]) -> int | None:
    """The positional table length of an original AnimateDiff checkpoint (its pos_encoder.pe: (1, L, C))."""
    pe = [v for k, v in state.items() if k.endswith("pos_encoder.pe")]
    return pe[0].shape[1] if pe else None


def _adapter_from_state_dict(state: dict[str, torch.Tensor], config: dict | None, path: str) -> MotionAdapter:
    if any(".temporal_transformer." in k for k in state):  # the original AnimateDiff layout
        max_frames = _original_max_frames(state)
        state = convert_animatediff_checkpoint_to_diffusers(state)
        config = config or _inferred_config(state, path)
        if max_frames is not None:
            config["motion_max_seq_length"] = max_frames
        # diffusers rebuilds the sinusoidal table from the config; the converted dict has none to load.
        adapter = MotionAdapter(**config)
        state = {**{k: v for k, v in adapter.state_dict().items() if k.endswith("pos_embed.pe")}, **state}
    else:
        config = config or _inferred_config(state, path)
        adapter = MotionAdapter(**config)
    try:
        adapter.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise ConfigError(f"motion adapter {path} does not fit its config: {first}") from None
    return adapter.eval()


def _load_safetensors_file(path: str) -> MotionAdapter:
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
    config = json.loads(metadata[_CONFIG_METADATA_KEY]) if _CONFIG_METADATA_KEY in metadata else None
    return _adapter_from_state_dict(load_file(path), config, path)


def _load_pickle_file(path: str) -> MotionAdapter:
    state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"motion adapter {path} holds a {type(state).__name__}, not a state dict")
    return _adapter_from_state_dict(state, None, path)


def _load_directory(path: str, allow_pickle: bool) -> MotionAdapter:
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ConfigError(f"motion adapter directory {path} has no config.json (a diffusers MotionAdapter)")
    safetensors = os.path.isfile(os.path.join(path, "diffusion_pytorch_model.safetensors"))
    if not safetensors and not allow_pickle:
        raise ConfigError(
            f"motion adapter directory {path} has no diffusion_pytorch_model.safetensors; "
            "pickled weights load only with --allow-pickle"
        )
    adapter = MotionAdapter.from_pretrained(path, local_files_only=True, use_safetensors=safetensors)
    return adapter.eval()


def load_motion_adapter(value: str, family: str, allow_pickle: bool = False) -> MotionAdapter:
    """A `--motion-adapter` value: "tiny" (the built-in adapter of `family`), a diffusers MotionAdapter
    directory, or a .safetensors file (diffusers or original AnimateDiff keys); pickles need allow_pickle."""
    if value == TINY_MOTION_ADAPTER:
        return build_tiny_motion_adapter(family)
    if os.path.isdir(value):
        return _load_directory(value, allow_pickle)
    lower = value.lower()
    if lower.endswith(_PICKLE_SUFFIXES):
        if not allow_pickle:
            raise ConfigError(
                f"motion adapter {value} is a pickle (it can run code when loaded); "
                "convert it to .safetensors or pass --allow-pickle"
            )
        if not os.path.isfile(value):
            raise ConfigError(f"motion adapter {value} does not exist")
        return _load_pickle_file(value)
    if lower.endswith(".safetensors"):
        if not os.path.isfile(value):
            raise ConfigError(f"motion adapter {value} does not exist")
        return _load_safetensors_file(value)
    raise ConfigError(
        f"motion adapter {value!r} is not 'tiny', a MotionAdapter directory or a .safetensors file"
    )


def adapter_window(value: str) -> int | None:
    """The most frames one call of the adapter's motion modules takes (its positional table), read from
    its config or file header without loading weights; None for a pickle (known only once loaded)."""
    from freescale.models.safetensors_header import read_safetensors_header

    if value == TINY_MOTION_ADAPTER:
        return TINY_MAX_FRAMES
    if os.path.isdir(value):
        config_path = os.path.join(value, "config.json")
        try:
            with open(config_path, encoding="utf-8") as handle:
                config = json.load(handle)
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"motion adapter {value}: unreadable config.json ({error})") from None
        return int(config.get("motion_max_seq_length", 32)) if isinstance(config, dict) else None
    if value.lower().endswith(".safetensors") and os.path.isfile(value):
        _, header = read_safetensors_header(value)
        metadata = header.get("__metadata__") or {}
        if _CONFIG_METADATA_KEY in metadata:
            return int(json.loads(metadata[_CONFIG_METADATA_KEY]).get("motion_max_seq_length", 32))
        tables = [info["shape"][1] for name, info in header.items() if name.endswith(("pos_embed.pe",
                  "pos_encoder.pe"))]  # fmt: skip
        return tables[0] if tables else 32
    return None


def motion_unet(loaded: LoadedModel, adapter: MotionAdapter) -> UNetMotionModel:
    """The AnimateDiff UNet of the loaded model's image UNet and `adapter`, on its device and in its dtype.

    diffusers' from_unet2d leaves SDXL's add_embedding (pooled text + micro-conditioning) at random
    init, so it is copied here; then every image-UNet weight is checked to be in the motion UNet as is.
    """
    image = loaded.pipe.unet
    try:
        unet = UNetMotionModel.from_unet2d(image, adapter)
    except ValueError as error:
        raise ConfigError(f"motion adapter does not fit {loaded.identity}: {error}") from None
    if getattr(image, "add_embedding", None) is not None:
        unet.add_embedding.load_state_dict(image.add_embedding.state_dict())
    unet.to(device=loaded.device, dtype=loaded.dtype)
    motion = unet.state_dict()
    for name, weight in image.state_dict().items():
        if name not in motion or not torch.equal(motion[name], weight.to(motion[name].dtype)):
            raise ConfigError(f"the motion UNet of {loaded.identity} lacks the image UNet's {name} as it is")
    return unet.eval()
