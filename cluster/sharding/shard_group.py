"""The ranks that share one stage, and the three collectives the sharded operators need.

With one rank every collective is the identity and no process group is touched, so the
single-process renderer is this same code with `ShardGroup.single()`. On a gloo group, device tensors go
through host memory (gloo moves only CPU tensors point to point): several ranks can then share one GPU,
which NCCL refuses.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from freescale.tiling.bands import Band, overlap


@dataclass
class CommStats:
    """Bytes this rank sent, and wall and CPU seconds its own thread spent in collectives, per kind (for
    bench/: CPU time inside a collective is communication's, not the model's arithmetic)."""

    bytes_sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    cpu_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @staticmethod
    def start() -> tuple[float, float]:
        """The clocks `add` measures from: (wall, this thread's CPU)."""
        return time.perf_counter(), time.thread_time()

    def add(self, kind: str, sent: int, started: tuple[float, float]) -> None:
        self.bytes_sent[kind] += sent
        self.seconds[kind] += time.perf_counter() - started[0]
        self.cpu_seconds[kind] += time.thread_time() - started[1]
        self.calls[kind] += 1

    def reset(self) -> None:
        for counts in (self.bytes_sent, self.seconds, self.cpu_seconds, self.calls):
            counts.clear()


def joined_rows(pieces: list[torch.Tensor], like: torch.Tensor, dim: int, zeros: Band) -> torch.Tensor:
    """The pieces in order along `dim` between zeros[0] and zeros[1] rows of zeros, in one copy; a lone piece
    with no zeros is returned as it is (a view: one rank, or a band that needs no halo)."""

    def block(rows: int) -> torch.Tensor:
        shape = list(like.shape)
        shape[dim] = rows
        return like.new_zeros(shape)

    parts = ([block(zeros[0])] if zeros[0] else []) + pieces + ([block(zeros[1])] if zeros[1] else [])
    if not parts:
        return block(0)
    if len(parts) == 1:
        return parts[0]
    return torch.cat(parts, dim=dim)


@dataclass
class ShardGroup:
    rank: int
    world: int
    group: object | None = None  # a torch.distributed ProcessGroup, None for the default group
    ranks: tuple[int, ...] | None = None  # global ranks of this group, in group-rank order
    stats: CommStats = field(default_factory=CommStats)

    @classmethod
    def single(cls) -> ShardGroup:
        return cls(rank=0, world=1)

    def _global(self, group_rank: int) -> int:
        return self.ranks[group_rank] if self.ranks is not None else group_rank

    def sendable_device(self, tensor: torch.Tensor) -> torch.device:
        """Where the backend can move this tensor from: its own device, or the host for gloo."""
        if tensor.device.type == "cpu" or dist.get_backend(self.group) != "gloo":
            return tensor.device
        return torch.device("cpu")

    def sendable(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.sendable_device(tensor))

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place, in the tensor's dtype (callers pass fp32 partial sums)."""
        if self.world > 1:
            started = self.stats.start()
            wire = self.sendable(tensor)
            dist.all_reduce(wire, op=dist.ReduceOp.SUM, group=self.group)
            if wire is not tensor:
                tensor.copy_(wire)
            # A ring all-reduce sends 2 (N - 1) / N of the tensor from every rank.
            self.stats.add("all_reduce", 2 * (self.world - 1) * tensor.nbytes // self.world, started)
        return tensor

    def all_gather_rows(self, local: torch.Tensor, bands: list[Band], dim: int) -> torch.Tensor:
        """Concatenate every rank's band along `dim` (bands may differ in size). With equal bands along the
        first dim, every rank's rows are received in place in the whole tensor: no copy to assemble it."""
        if self.world == 1:
            return local
        started = self.stats.start()
        longest = max(b - a for a, b in bands)
        pad_shape = list(local.shape)
        pad_shape[dim] = longest - local.shape[dim]
        if pad_shape[dim]:  # gloo and NCCL gather equal sizes: shorter bands travel padded
            local = torch.cat([local, local.new_zeros(pad_shape)], dim=dim)
        padded = self.sendable(local.contiguous())
        in_place = dim % local.dim() == 0 and all(b - a == longest for a, b in bands)
        if in_place:
            whole = padded.new_empty((longest * self.world, *padded.shape[1:]))
            parts = list(whole.split(longest))  # contiguous views, one per rank
        else:
            parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded, group=self.group)
        self.stats.add("all_gather", (self.world - 1) * padded.nbytes, started)
        if not in_place:
            pieces = [p.narrow(dim, 0, b - a) for p, (a, b) in zip(parts, bands, strict=True)]
            whole = torch.cat(pieces, dim=dim)
        return whole.to(local.device)

    def fetch_rows(
        self, local: torch.Tensor, bands: list[Band], needs: list[Band], dim: int, zeros: Band = (0, 0)
    ) -> torch.Tensor:
        """Rows needs[rank] (clipped to the tensor) of the whole tensor, whose bands the ranks hold, with
        `zeros` = (above, below) rows of zeros around them: a conv's padding at the grid's edges, put in by
        the one copy that joins the pieces instead of a second one.

        `needs` lists every rank's request, so each rank knows what to send without asking. The result may be
        a view of `local` (when no other rank sends rows and no zeros are asked for): read it, do not write
        to it.
        """
        lo, hi = needs[self.rank]
        mine = bands[self.rank]
        pieces: dict[int, torch.Tensor] = {}
        ops = []
        for other in range(self.world):
            if other == self.rank:
                continue
            send = overlap(mine, needs[other])
            if send is not None:
                chunk = self.sendable(local.narrow(dim, send[0] - mine[0], send[1] - send[0]).contiguous())
                ops.append(dist.P2POp(dist.isend, chunk, self._global(other), group=self.group))
            recv = overlap(bands[other], (lo, hi))
            if recv is not None:
                shape = list(local.shape)
                shape[dim] = recv[1] - recv[0]
                buffer = torch.empty(shape, dtype=local.dtype, device=self.sendable_device(local))
                pieces[recv[0]] = buffer
                ops.append(dist.P2POp(dist.irecv, buffer, self._global(other), group=self.group))
        own = overlap(mine, (lo, hi))
        if own is not None:
            pieces[own[0]] = local.narrow(dim, own[0] - mine[0], own[1] - own[0])
        if ops:
            started = self.stats.start()
            for request in dist.batch_isend_irecv(ops):
                request.wait()
            sent = sum(op.tensor.nbytes for op in ops if op.op is dist.isend)
            self.stats.add("halo", sent, started)
        return joined_rows([pieces[start].to(local.device) for start in sorted(pieces)], local, dim, zeros)

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Rank `src`'s tensor on every rank, in place (all ranks pass a tensor of the same shape)."""
        if self.world > 1:
            started = self.stats.start()
            wire = self.sendable(tensor)
            dist.broadcast(wire, self._global(src), group=self.group)
            if wire is not tensor:
                tensor.copy_(wire)
            sent = tensor.nbytes * (self.world - 1) if self.rank == src else 0
            self.stats.add("broadcast", sent, started)
        return tensor
