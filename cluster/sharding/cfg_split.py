"""Classifier-free guidance over two groups of ranks: one group computes the unconditional half of
the batch, the other the conditional half, and partner ranks (same band) swap their predictions."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from freescale.cluster.sharding.shard_group import ShardGroup
from freescale.config.sharding_check import check_cfg_parallel


@dataclass
class CfgSplit:
    half: int  # 0: this rank computes the unconditional prediction, 1: the conditional one
    partner: int  # global rank holding the same band in the other group
    world: ShardGroup

    def swap(self, mine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(unconditional, conditional) predictions for this band, the same tensors on both partners."""
        mine = mine.contiguous()  # a motion UNet returns a permuted view; empty_like would keep its strides
        sent = self.world.sendable(mine)
        received = torch.empty_like(sent)
        started = self.world.stats.start()
        ops = [dist.P2POp(dist.isend, sent, self.partner),
               dist.P2POp(dist.irecv, received, self.partner)]  # fmt: skip
        for request in dist.batch_isend_irecv(ops):
            request.wait()
        self.world.stats.add("cfg_swap", mine.nbytes, started)
        theirs = received.to(mine.device)
        return (mine, theirs) if self.half == 0 else (theirs, mine)


_SPLITS: dict[int, tuple[ShardGroup, CfgSplit]] = {}


def split_for_cfg(world: ShardGroup) -> tuple[ShardGroup, CfgSplit]:
    """Two equal groups of the world's ranks; returns this rank's band group and its CFG partner.

    Made once per worker process and reused: process groups are costly to create (NCCL
    communicators), and every render of a worker pool splits the same way."""
    if id(world) in _SPLITS:
        return _SPLITS[id(world)]
    check_cfg_parallel(world.world)
    size = world.world // 2
    halves = [tuple(range(size)), tuple(range(size, 2 * size))]
    groups = [dist.new_group(list(ranks)) for ranks in halves]  # every rank creates both, in order
    half = world.rank // size
    band_group = ShardGroup(rank=world.rank % size, world=size, group=groups[half], ranks=halves[half])
    partner = (world.rank + size) % world.world
    _SPLITS[id(world)] = band_group, CfgSplit(half=half, partner=partner, world=world)
    return _SPLITS[id(world)]
