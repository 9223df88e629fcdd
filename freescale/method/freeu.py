"""FreeU v1 as the reference applies it: scale the backbone, damp the skip's lowest frequencies (SPEC 6).

Only 4 frequencies change, so the Fourier filter is x + (s - 1) * (their inverse transform), which
needs sums over the whole plane and nothing else: a row band computes its part of the sums.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import torch

from freescale.cluster.sharding.shard_context import ShardContext
from freescale.method.unet_topology import freeu_targets


def shifted_low_frequencies(length: int) -> list[int]:
    """Frequency indices of the rows [L//2 - 1, L//2 + 1) of the fftshift-ed spectrum."""
    shifted = list(range(length))[length // 2 - 1 : length // 2 + 1]
    return [(c - length // 2) % length for c in shifted]


@lru_cache(maxsize=256)
def _basis(length: int, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """exp(-2 pi i k p / L) for the 4 low frequencies k and positions p in [start, stop), complex64
    (K, P). Built on the host and cached: no host-device sync inside a UNet call."""
    k = torch.tensor(shifted_low_frequencies(length), dtype=torch.float64)[:, None]
    p = torch.arange(start, stop, dtype=torch.float64)[None, :]
    angle = -2 * math.pi * k * p / length
    return torch.polar(torch.ones_like(angle), angle).to(device, torch.complex64)


def low_frequency_sums(x: torch.Tensor, row_start: int, full_height: int) -> torch.Tensor:
    """The 4 low Fourier coefficients of (B, C, rows, W) taken as rows [row_start, ...) of the plane.

    Summing the results of all row bands gives the whole plane's coefficients.
    """
    rows, width = x.shape[-2:]
    eh = _basis(full_height, row_start, row_start + rows, x.device)
    ew = _basis(width, 0, width, x.device)
    # Straight to complex64: a half-precision x converts exactly, with no float32 copy on the way.
    return torch.einsum("bchw,kh,lw->bckl", x.to(torch.complex64), eh, ew)


def apply_low_frequency_scale(
    x: torch.Tensor, sums: torch.Tensor, scale: float, row_start: int, full_height: int
) -> torch.Tensor:
    """F(x, s) for the rows of x, given the plane's low coefficients: x + (s - 1) * their inverse."""
    rows, width = x.shape[-2:]
    eh = _basis(full_height, row_start, row_start + rows, x.device)
    ew = _basis(width, 0, width, x.device)
    low = torch.einsum("bckl,kh,lw->bchw", sums, eh.conj(), ew.conj()).real / (full_height * width)
    # `low` is float32, so the sum is taken in float32 (type promotion) without a float32 copy of x.
    return (x + (scale - 1.0) * low).to(x.dtype)


def fourier_filter(x: torch.Tensor, scale: float) -> torch.Tensor:
    """F(x, s) on a whole (B, C, H, W) plane."""
    height = x.shape[-2]
    return apply_low_frequency_scale(x, low_frequency_sums(x, 0, height), scale, 0, height)


def band_fourier_filter(x: torch.Tensor, scale: float, shard: ShardContext | None) -> torch.Tensor:
    """F(x, s) for this rank's rows of the plane: the low-frequency sums are added up over ranks."""
    if shard is None:
        return fourier_filter(x, scale)
    factor = shard.factor_for_rows(x.shape[-2])
    row_start, height = shard.bands_at(factor)[shard.group.rank][0], shard.grid_at(factor)[0]
    sums = shard.group.all_reduce_sum(low_frequency_sums(x, row_start, height))
    return apply_low_frequency_scale(x, sums, scale, row_start, height)


class FreeUPreHook:
    """Forward pre-hook of one up-block resnet: edits the concatenated [hidden, skip] input, whether the
    block passes it positionally (UNet2DConditionModel) or by keyword (a motion UNet's `input_tensor=`)."""

    def __init__(
        self,
        hidden_channels: int,
        backbone_scale: float,
        skip_scale: float,
        shard: ShardContext | None = None,
    ):
        self.hidden_channels = hidden_channels
        self.backbone_scale = backbone_scale
        self.skip_scale = skip_scale
        self.shard = shard

    def edit(self, x: torch.Tensor) -> torch.Tensor:
        """FreeU on one [hidden, skip] concatenation: scale the backbone's first half, filter the skip."""
        hidden, skip = x[:, : self.hidden_channels], x[:, self.hidden_channels :]
        half = self.hidden_channels // 2
        hidden = torch.cat([hidden[:, :half] * self.backbone_scale, hidden[:, half:]], dim=1)
        skip = band_fourier_filter(skip, self.skip_scale, self.shard)
        return torch.cat([hidden, skip], dim=1)

    def __call__(self, module, args, kwargs):
        if args:
            return (self.edit(args[0]), *args[1:]), kwargs
        name = _first_input_name(type(module))
        if name not in kwargs:
            raise TypeError(f"{type(module).__name__} was called without its input {name!r}")
        return args, {**kwargs, name: self.edit(kwargs[name])}


@lru_cache(maxsize=16)
def _first_input_name(module_type: type) -> str:
    """The name of forward's first argument after self (ResnetBlock2D: `input_tensor`)."""
    parameters = list(inspect.signature(module_type.forward).parameters)
    return parameters[1]


@contextmanager
def freeu_applied(
    unet, params: tuple[float, float, float, float] | None, shard: ShardContext | None = None
) -> Iterator[list[FreeUPreHook]]:
    """Apply FreeU (b1, b2, s1, s2) to every up block for the duration; None applies nothing.

    `shard`: the row band context when the UNet runs on bands (None: whole planes)."""
    hooks: list[FreeUPreHook] = []
    handles = []
    if params is not None:
        b1, b2, s1, s2 = params
        for resnet, hidden, pair in freeu_targets(unet):
            hook = FreeUPreHook(hidden, (b1, b2)[pair], (s1, s2)[pair], shard)
            hooks.append(hook)
            handles.append(resnet.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        yield hooks
    finally:
        for handle in handles:
            handle.remove()
