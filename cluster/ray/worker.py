"""One render worker: a process-group member that loads the model once and runs functions the driver sends."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import ray
import torch

from freescale.cluster.ray import process_group
from freescale.cluster.sharding.rank_state import RankState


class RenderWorker:
    """Plain class; WorkerPool wraps it with ray.remote so each pool picks its own num_gpus/num_cpus."""

    def __init__(self) -> None:
        self._state: RankState | None = None

    def address_and_port(self) -> tuple[str, int]:
        """Rank 0's rendezvous: its node IP and a port free there."""
        return process_group.node_address(), process_group.free_port()

    def setup(
        self,
        rank: int,
        world: int,
        address: str,
        port: int,
        backend: str | None,
        timeout_s: float,
        model: str | None,
        model_config: str | None,
        device: str | None,
        dtype: str | None,
        allow_pickle: bool = False,
        lora: tuple = (),
    ) -> str:
        """Join the process group, then load the model once; returns the backend in use."""
        backend = backend or process_group.default_backend()
        group = process_group.init_process_group(rank, world, address, port, backend, timeout_s)
        if device is None:
            # Explicit, because a CPU actor on a GPU node may still see CUDA devices.
            device = "cuda" if process_group.has_gpu() else "cpu"
        loaded = None
        if model is not None:
            # Imported here so pools without a model skip the diffusers import (seconds per process).
            from freescale.models.loading import load_model, resolve_model_source

            source = resolve_model_source(model, model_config, allow_pickle, lora=lora)
            loaded = load_model(source, device=device, dtype=dtype)
        torch_device = loaded.device if loaded is not None else torch.device(device)
        self._state = RankState(rank=rank, world=world, group=group, model=loaded, device=torch_device)
        return backend

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._state is None:
            raise RuntimeError("RenderWorker.run called before setup")
        return fn(self._state, *args, **kwargs)

    def ping(self) -> bool:
        return True

    def pid(self) -> int:
        return os.getpid()

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def node_address(self) -> str:
        return process_group.node_address()

    def shutdown(self) -> None:
        process_group.destroy_process_group()
        self._state = None
