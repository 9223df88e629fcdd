"""Which UNet modules FreeScale patches, chosen by module type and position in the topology (SPEC 4-6, 8).

Names are never matched: any UNet2DConditionModel (SDXL, SD1.5, SD2.x) or AnimateDiff motion UNet is
read through its down blocks, mid block and transformers, and what a rule needs but the UNet lacks is
an error naming it.
"""

from __future__ import annotations

from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn

from freescale.cluster.sharding.band_ops import BandConv2d
from freescale.errors import ConfigError


class UnsupportedUNetError(ConfigError):
    """The UNet lacks a module a FreeScale rule needs; the message names the model class and the module."""


def _unsupported(unet: nn.Module, what: str) -> UnsupportedUNetError:
    return UnsupportedUNetError(f"{type(unet).__name__} is not supported by FreeScale: {what}")


def spatial_self_attention(unet: nn.Module) -> list[tuple[str, nn.Module]]:
    """attn1 of every BasicTransformerBlock of every Transformer2DModel, in module order (that order
    numbers the jitter layers). Temporal attention (a motion module's transformer) is not included."""
    layers = []
    for name, module in unet.named_modules():
        if not isinstance(module, Transformer2DModel):
            continue
        for index, block in enumerate(module.transformer_blocks):
            if isinstance(block, BasicTransformerBlock):
                layers.append((f"{name}.transformer_blocks.{index}.attn1", block.attn1))
    if not layers:
        raise _unsupported(unet, "it has no Transformer2DModel self-attention (attn1) to put scale fusion on")
    return layers


def _plain_conv(unet: nn.Module, name: str, module: nn.Module | None) -> nn.Conv2d:
    """The Conv2d itself; a sharded UNet's BandConv2d reads the settings of the conv it wraps."""
    conv = module.inner if isinstance(module, BandConv2d) else module
    if not isinstance(conv, nn.Conv2d):
        raise _unsupported(unet, f"{name} is {type(conv).__name__}, not a Conv2d to dilate")
    return conv


def _resnet_convs(unet: nn.Module, prefix: str, block: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    resnets = getattr(block, "resnets", None)
    if not resnets:
        raise _unsupported(unet, f"{prefix} ({type(block).__name__}) has no resnets")
    convs = []
    for j, resnet in enumerate(resnets):
        if not isinstance(resnet, ResnetBlock2D):
            raise _unsupported(unet, f"{prefix}.resnets.{j} is {type(resnet).__name__}, not a ResnetBlock2D")
        for part in ("conv1", "conv2"):
            name = f"{prefix}.resnets.{j}.{part}"
            convs.append((name, _plain_conv(unet, name, getattr(resnet, part))))
    return convs


def dilated_convs(unet: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The restrained-dilation convs (SPEC 5, 8): the last down-sampler's conv, then conv1 and conv2 of
    every resnet of the deepest down block and of the mid block (SDXL: the nine convs of SPEC 5)."""
    down_blocks = getattr(unet, "down_blocks", None)
    if not down_blocks:
        raise _unsupported(unet, "it has no down blocks (the deepest down block's resnets are dilated)")
    with_downsampler = [i for i, block in enumerate(down_blocks) if getattr(block, "downsamplers", None)]
    if not with_downsampler:
        raise _unsupported(unet, "no down block has a down-sampler (the last one's conv is dilated)")
    last = with_downsampler[-1]
    name = f"down_blocks.{last}.downsamplers.0.conv"
    convs = [(name, _plain_conv(unet, name, getattr(down_blocks[last].downsamplers[0], "conv", None)))]
    convs += _resnet_convs(unet, f"down_blocks.{len(down_blocks) - 1}", down_blocks[-1])
    mid_block = getattr(unet, "mid_block", None)
    if mid_block is None:
        raise _unsupported(unet, "it has no mid block (mid_block is None; its resnets are dilated)")
    return convs + _resnet_convs(unet, "mid_block", mid_block)


def freeu_channels(unet: nn.Module) -> tuple[int, int]:
    """(C_top, C_mid) of FreeU (SPEC 6, 8): the widest up-block width and the next lower distinct one."""
    up_blocks = getattr(unet, "up_blocks", None)
    if not up_blocks or not all(getattr(block, "resnets", None) for block in up_blocks):
        raise _unsupported(unet, "FreeU needs up blocks with resnets")
    widths = sorted({block.resnets[-1].out_channels for block in up_blocks}, reverse=True)
    if len(widths) < 2:
        raise _unsupported(unet, f"FreeU needs two distinct up-block widths, found only {widths}")
    return widths[0], widths[1]


def freeu_targets(unet: nn.Module) -> list[tuple[nn.Module, int, int]]:
    """(resnet, hidden channels, which pair: 0 for (b1, s1), 1 for (b2, s2)) of every up-block resnet
    whose backbone input has C_top or C_mid channels, in module order."""
    top, mid = freeu_channels(unet)
    mid_block = getattr(unet, "mid_block", None)
    if mid_block is None or not getattr(mid_block, "resnets", None):
        raise _unsupported(unet, "FreeU needs a mid block with resnets (it feeds the first up block)")
    targets = []
    previous_out = mid_block.resnets[-1].out_channels
    for block in unet.up_blocks:
        for j, resnet in enumerate(block.resnets):
            hidden = previous_out if j == 0 else block.resnets[j - 1].out_channels
            if hidden in (top, mid):
                targets.append((resnet, hidden, 0 if hidden == top else 1))
        previous_out = block.resnets[-1].out_channels
    return targets
