"""Token grids of the UNet's resolution levels: each down-sampler halves a side, rounding up."""

from __future__ import annotations


def level_grids(latent: tuple[int, int], levels: int = 4) -> list[tuple[int, int]]:
    grids = [latent]
    for _ in range(levels - 1):
        h, w = grids[-1]
        grids.append(((h + 1) // 2, (w + 1) // 2))
    return grids


def token_grid(latent: tuple[int, int], num_tokens: int) -> tuple[int, int]:
    """The (h, w) grid of a transformer block that sees `num_tokens` tokens of a latent of this size."""
    for h, w in level_grids(latent, levels=8):
        if h * w == num_tokens:
            return (h, w)
    raise ValueError(f"{num_tokens} tokens match no level of a {latent[0]}x{latent[1]} latent")
