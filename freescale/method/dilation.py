"""Restrained dilated convolutions: the few mid-level convs that dilate by (n_h, n_w) early on (SPEC 5)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

DILATED_CONVS = (
    "down_blocks.1.downsamplers.0.conv",
    "down_blocks.2.resnets.0.conv1",
    "down_blocks.2.resnets.0.conv2",
    "down_blocks.2.resnets.1.conv1",
    "down_blocks.2.resnets.1.conv2",
    "mid_block.resnets.0.conv1",
    "mid_block.resnets.0.conv2",
    "mid_block.resnets.1.conv1",
    "mid_block.resnets.1.conv2",
)


class DilationSwitch:
    """Turns the listed convs' dilation (and equal padding) on and off between UNet calls."""

    def __init__(self, unet: torch.nn.Module, factors: tuple[int, int]):
        modules = dict(unet.named_modules())
        # A sharded UNet wraps each conv; the wrapper reads the inner conv's settings.
        self.convs = [
            getattr(modules[name], "inner", modules[name]) for name in DILATED_CONVS if name in modules
        ]
        self.factors = factors
        self.original = [(conv.dilation, conv.padding) for conv in self.convs]

    def set(self, on: bool) -> None:
        for conv, (dilation, padding) in zip(self.convs, self.original, strict=True):
            conv.dilation, conv.padding = (self.factors, self.factors) if on else (dilation, padding)


@contextmanager
def dilation_switch(unet: torch.nn.Module, factors: tuple[int, int]) -> Iterator[DilationSwitch]:
    switch = DilationSwitch(unet, factors)
    try:
        yield switch
    finally:
        switch.set(False)
