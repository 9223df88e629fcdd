"""What one rank of a render holds between calls: its place in the group, the model, and results kept for
the driver to fetch piece by piece. The same record on a Ray worker and in the driver's own process."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from freescale.cluster.sharding.shard_group import ShardGroup


@dataclass
class RankState:
    """The first argument of every function a pool runs on a rank."""

    rank: int
    world: int
    group: ShardGroup
    model: Any  # freescale.models.loading.LoadedModel, or None for a pool built without a model
    device: torch.device
    progress: Any = None  # a freescale.progress.Progress for rank 0's steps; None: plain lines on rank 0
    held: dict = field(default_factory=dict)  # results kept for the driver to fetch piece by piece
    # The motion UNet of the last video render, kept warm for the next: (adapter value, UNetMotionModel).
    motion_unet: tuple[str, Any] | None = None
