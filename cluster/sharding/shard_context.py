"""Which rows of the current stage this rank holds: the state every sharded operator reads.

One `ShardContext` per UNet, updated at each stage; with one rank it covers the whole latent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from freescale.cluster.sharding.shard_group import ShardGroup
from freescale.tiling.bands import Band, row_bands, scale_band


@dataclass
class ShardContext:
    group: ShardGroup = field(default_factory=ShardGroup.single)
    latent: tuple[int, int] = (0, 0)  # the whole stage's latent (rows, cols)
    bands: list[Band] = field(default_factory=list)  # every rank's latent rows at full resolution
    align: int = 4  # 2 ** (number of UNet down-samplers): bands split evenly at every level

    def set_stage(self, latent: tuple[int, int]) -> None:
        """Split a new stage's latent rows over this group's ranks."""
        self.latent = (int(latent[0]), int(latent[1]))
        self.bands = row_bands(self.latent[0], self.group.world, self.align)

    @property
    def band(self) -> Band:
        return self.bands[self.group.rank]

    def factor_for_rows(self, rows: int) -> int:
        """The level (1, 2, 4, ...) at which this rank's band has `rows` rows."""
        for factor in self._factors():
            a, b = scale_band(self.band, factor)
            if b - a == rows:
                return factor
        raise ValueError(f"{rows} rows match no level of band {self.band}")

    def factor_for_tokens(self, tokens: int) -> int:
        """The level at which this rank's band of tokens (rows x cols) has `tokens` tokens."""
        for factor in self._factors():
            a, b = scale_band(self.band, factor)
            if (b - a) * self.grid_at(factor)[1] == tokens:
                return factor
        raise ValueError(f"{tokens} tokens match no level of band {self.band} of a {self.latent} latent")

    def _factors(self) -> list[int]:
        return [2**k for k in range(8)]

    def bands_at(self, factor: int) -> list[Band]:
        return [scale_band(band, factor) for band in self.bands]

    def grid_at(self, factor: int) -> tuple[int, int]:
        return (-(-self.latent[0] // factor), -(-self.latent[1] // factor))
