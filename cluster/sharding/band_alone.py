"""One rank of a sharded stage run alone: its band's whole arithmetic, halos included, with the other
ranks' rows standing in as zeros, so one device can time any rank of an N-device split (bench/).

The values are not the render's (another rank's rows are zeros, sums are this band's own), only the
shapes and therefore the work: nothing here is for producing images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from freescale.cluster.sharding.shard_group import ShardGroup
from freescale.tiling.bands import Band, overlap


@dataclass
class BandAloneGroup(ShardGroup):
    """A ShardGroup of `world` ranks in which only `rank` exists; its collectives move nothing."""

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def all_gather_rows(self, local: torch.Tensor, bands: list[Band], dim: int) -> torch.Tensor:
        a, b = bands[self.rank]
        shape = list(local.shape)
        shape[dim] = bands[-1][1] - bands[0][0]
        whole = local.new_zeros(shape)
        whole.narrow(dim, a - bands[0][0], b - a).copy_(local)
        return whole

    def fetch_rows(
        self, local: torch.Tensor, bands: list[Band], needs: list[Band], dim: int, zeros: Band = (0, 0)
    ) -> torch.Tensor:
        mine = bands[self.rank]
        lo, hi = max(needs[self.rank][0], bands[0][0]), min(needs[self.rank][1], bands[-1][1])
        shape = list(local.shape)
        shape[dim] = max(hi - lo, 0) + zeros[0] + zeros[1]
        rows = local.new_zeros(shape)
        own = overlap(mine, (lo, hi))
        if own is not None:
            length = own[1] - own[0]
            start = zeros[0] + own[0] - lo
            rows.narrow(dim, start, length).copy_(local.narrow(dim, own[0] - mine[0], length))
        return rows

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        return tensor
