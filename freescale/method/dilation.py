"""Restrained dilated convolutions: the few mid-level convs that dilate by (n_h, n_w) early on (SPEC 5)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from freescale.method.unet_topology import dilated_convs


class DilationSwitch:
    """Turns the topology's dilated convs' dilation (and equal padding) on and off between UNet calls."""

    def __init__(self, unet: torch.nn.Module, factors: tuple[int, int]):
        # A sharded UNet wraps each conv; these are the inner convs, whose settings the wrapper reads.
        self.convs = [conv for _, conv in dilated_convs(unet)]
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
