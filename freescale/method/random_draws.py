"""Keyed random draws: every tensor of noise comes from (seed, purpose, stage, step), drawn whole on the CPU.

Drawing the full tensor on the CPU makes a render independent of the device, of how it is sharded
(each rank keeps its band of the same draw) and of whether it was resumed.
"""

from __future__ import annotations

import hashlib

import torch


def draw_key(seed: int, purpose: str, stage: int = 0, step: int = 0) -> int:
    text = f"freescale/{seed}/{purpose}/{stage}/{step}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & ((1 << 63) - 1)


def keyed_generator(seed: int, purpose: str, stage: int = 0, step: int = 0) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(draw_key(seed, purpose, stage, step))


def keyed_normal(
    shape: tuple[int, ...],
    seed: int,
    purpose: str,
    stage: int = 0,
    step: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """N(0, I) of `shape`, the same values on every device and every rank."""
    sample = torch.randn(shape, generator=keyed_generator(seed, purpose, stage, step), dtype=torch.float32)
    return sample.to(device=device, dtype=dtype)
