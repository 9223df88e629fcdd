"""How much memory a worker's device has, for the preflight check: the record, and this machine's device
for an in-process render (a Ray cluster's devices: `cluster.ray.device_probe`). Loads no model."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerDevice:
    name: str  # torch's device name ('NVIDIA H200') or 'cpu': it picks the cost calibration
    memory_bytes: int  # per worker, the smallest over the devices asked (free memory, not total)
    devices: int  # how many workers the cluster can hold: its GPUs, or its CPU slots


def available_host_memory() -> int:
    """Memory this machine can still give a process (MemAvailable on Linux, else free pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def local_device(device: str | None = None) -> WorkerDevice:
    """This machine's device for a one-worker, in-process render (`device` as --device takes it)."""
    import torch

    if device != "cpu" and (device is None or device.startswith("cuda")) and torch.cuda.is_available():
        index = torch.device(device or "cuda").index or 0
        free, _ = torch.cuda.mem_get_info(index)
        return WorkerDevice(torch.cuda.get_device_name(index), int(free), 1)
    return WorkerDevice("cpu", available_host_memory(), 1)
