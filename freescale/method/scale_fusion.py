"""`scale_fusion`: make a diffusers UNet (SDXL, SD1.5, SD2.x, AnimateDiff motion) evaluate FreeScale steps.

Swaps the spatial attn1 processors, sets the restrained dilation and FreeU, and puts the UNet back exactly as
it was on exit. The renderer uses this same context manager for every stage above the base.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch

from freescale.cluster.sharding.shard_context import ShardContext
from freescale.config.render_config import FREEU_DEFAULT
from freescale.method.dilation import DilationSwitch, dilation_switch
from freescale.method.freeu import freeu_applied
from freescale.method.scale_attention import FusionStep, ScaleFusionProcessor
from freescale.method.unet_topology import spatial_self_attention
from freescale.tiling.stages import scale_counts


class ScaleFusion:
    """Handle yielded by `scale_fusion`: tell it which step comes next before each UNet call."""

    def __init__(self, step: FusionStep, dilation: DilationSwitch | None):
        self.fusion_step = step
        self._dilation = dilation

    def begin_step(self, stage: int, step: int, dilate: bool = True) -> None:
        """Key the window jitter by (stage, step) and switch the dilated convs on or off."""
        self.fusion_step.stage = stage
        self.fusion_step.step = step
        if self._dilation is not None:
            self._dilation.set(dilate)


@contextmanager
def _processors_swapped(unet: torch.nn.Module, step: FusionStep) -> Iterator[None]:
    modules = spatial_self_attention(unet)
    originals = [module.processor for _, module in modules]
    for layer, (_, module) in enumerate(modules):
        module.set_processor(ScaleFusionProcessor(step, layer))
    try:
        yield
    finally:
        for (_, module), processor in zip(modules, originals, strict=True):
            module.set_processor(processor)


@contextmanager
def _latent_size_recorded(unet: torch.nn.Module, shard: ShardContext) -> Iterator[None]:
    """Unsharded use: each UNet call's latent is the whole grid, so the processors can place tokens."""

    def record(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        shard.set_stage(tuple(sample.shape[-2:]))

    handle = unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def scale_fusion(
    unet: torch.nn.Module,
    native_size: tuple[int, int] | int,
    target_size: tuple[int, int],
    fast_mode: bool = False,
    dilation: bool = True,
    freeu: tuple[float, float, float, float] | None = FREEU_DEFAULT,
    jitter_seed: int | None = None,
    blur_channels: bool = True,
    shard: ShardContext | None = None,
) -> Iterator[ScaleFusion]:
    """Within the block, `unet(latents, ...)` at `target_size` pixels is one FreeScale step.

    native_size: the model's native resolution (SDXL 1024, Turbo 512); only a square native is
    meaningful for the method, so a pair must have equal sides. dilation: dilate the SPEC's convs
    (switch per step with `handle.begin_step(stage, step, dilate=...)`). freeu: (b1, b2, s1, s2)
    or None. jitter_seed: None keeps windows unjittered; otherwise windows jitter by
    (seed, stage, step, layer). blur_channels: the reference's 3-D Gaussian (False: 2-D spatial).
    shard: the row band context of a sharded UNet (the renderer's); None for a plain UNet.
    """
    native = native_size if isinstance(native_size, int) else native_size[0]
    if not isinstance(native_size, int) and native_size[0] != native_size[1]:
        raise ValueError(f"native_size must be square, got {native_size}")
    counts = scale_counts(tuple(target_size), native)
    if min(counts) < 1:
        raise ValueError(
            f"target_size {tuple(target_size)} must be at least the native {native} on each side"
        )
    # A UNet our renderer has sharded keeps its band context; a plain UNet gets a one-rank one.
    context = shard or getattr(unet, "shard_context", None) or ShardContext()
    if shard is None and context.group.world > 1:
        raise ValueError("a UNet sharded over several ranks needs its ShardContext passed as shard=")
    step = FusionStep(
        scale_counts=counts,
        shard=context,
        fast_mode=fast_mode,
        jitter_seed=jitter_seed,
        blur_channels=blur_channels,
    )
    with ExitStack() as stack:
        stack.enter_context(_processors_swapped(unet, step))
        if shard is None:
            stack.enter_context(_latent_size_recorded(unet, step.shard))
        stack.enter_context(freeu_applied(unet, freeu, step.shard))
        switch = stack.enter_context(dilation_switch(unet, counts)) if dilation else None
        handle = ScaleFusion(step, switch)
        if switch is not None:
            switch.set(True)
        yield handle
