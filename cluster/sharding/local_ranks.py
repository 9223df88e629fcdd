"""Run a function on N local processes joined in a gloo process group, without Ray: for the sharded
operator tests and the sharding benchmarks on one machine."""

from __future__ import annotations

import os
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn, args, out_dir: str, threads: int) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from freescale.cluster.sharding.shard_group import ShardGroup

        result = fn(ShardGroup(rank=rank, world=world), *args)
        torch.save(result, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_ranks(world: int, fn, *args, threads: int = 1) -> list:
    """fn(group, *args) on every rank, `threads` torch threads each; results in rank order.

    fn must be importable by name (a module-level function of an installed or test module)."""
    with tempfile.TemporaryDirectory() as out_dir:
        process_args = (world, _free_port(), fn, args, out_dir, threads)
        mp.start_processes(_entry, args=process_args, nprocs=world, start_method="spawn")
        return [torch.load(os.path.join(out_dir, f"{r}.pt"), weights_only=False) for r in range(world)]


def max_relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max().clamp(min=1e-30))
