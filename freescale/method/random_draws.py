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


def clip_noise(
    frame_shape: tuple[int, ...],
    frames: range,
    seed: int,
    purpose: str,
    stage: int = 0,
    shuffle: tuple[int, int] | None = None,
) -> torch.Tensor:
    """N(0, I) for frames `frames` of a clip, (B, C, len(frames), h, w): each frame its own keyed draw of
    `frame_shape` (B, C, h, w), so a frame's noise does not depend on which chunk of the clip renders it.

    shuffle (window, stride): FreeNoise's shuffled repetition: frames from `window` on take the noise of
    a first-window frame (`shuffled_noise_sources`), each shuffle keyed by (seed, purpose, stage, its first
    frame)."""
    from freescale.tiling.temporal_windows import shuffled_noise_sources

    sources = list(frames)
    if shuffle is not None:
        window, stride = shuffle
        runs = iter(range(window, frames.stop, stride))

        def permutation(n: int) -> list[int]:
            generator = keyed_generator(seed, f"{purpose}-shuffle", stage, next(runs))
            return torch.randperm(n, generator=generator).tolist()

        sources = shuffled_noise_sources(frames.stop, window, stride, permutation)[frames.start :]
    draws = [keyed_normal(frame_shape, seed, f"{purpose}/frame{f}", stage) for f in sources]
    return torch.stack(draws, dim=2)
