"""The world split into equal groups of consecutive ranks, each rendering work of its own at the same time,
sharded over the group's ranks in row bands: a long clip's chunks (frames x bands), or a batch's jobs side by
side."""

from __future__ import annotations

import torch.distributed as dist

from freescale.cluster.sharding.shard_group import ShardGroup

_SPLITS: dict[tuple[int, int], tuple[int, ShardGroup]] = {}


def split_into_groups(world: ShardGroup, groups: int) -> tuple[int, ShardGroup]:
    """(this rank's group, its band group): `groups` groups of consecutive ranks. Made once per worker
    process and split the same way for every render (process groups are costly to create)."""
    if groups == 1:
        return 0, world
    if world.world % groups:
        raise ValueError(f"{world.world} ranks do not split into {groups} equal groups")
    key = (id(world), groups)
    if key not in _SPLITS:
        size = world.world // groups
        members = [tuple(range(g * size, (g + 1) * size)) for g in range(groups)]
        handles = [dist.new_group(list(ranks)) for ranks in members]  # every rank creates all, in order
        mine = world.rank // size
        band_group = ShardGroup(rank=world.rank % size, world=size, group=handles[mine], ranks=members[mine])
        _SPLITS[key] = mine, band_group
    return _SPLITS[key]
