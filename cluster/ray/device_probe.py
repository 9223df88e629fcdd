"""The devices a pool's workers would get, asked of the running Ray cluster before any worker starts:
one tiny task per GPU asks CUDA; CPU workers share their node's memory."""

from __future__ import annotations

from freescale.errors import ConfigError
from freescale.planning.device_memory import WorkerDevice

_PROBE_TIMEOUT_S = 120.0


def _gpu_info() -> tuple[str, int, int]:
    """(name, free bytes, total bytes) of this process's GPU; free is what a worker could still allocate
    after its CUDA context, which this process holds too."""
    import torch

    free, total = torch.cuda.mem_get_info()
    return torch.cuda.get_device_name(), int(free), int(total)


def ray_worker_devices(
    workers: int, use_gpu: bool | None = None, cpus_per_worker: float = 1.0
) -> WorkerDevice:
    """Per-worker device memory in the running Ray cluster (ray.init must have been called).

    GPUs: min(workers, GPUs) one-GPU tasks report their device's free memory; the smallest counts.
    CPU workers: each node's Ray `memory` resource shared by the workers its CPUs can hold."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if use_gpu is None:
        use_gpu = gpus > 0
    if use_gpu:
        if gpus == 0:
            raise ConfigError("GPU workers were asked for, but the Ray cluster has no GPUs")
        probe = ray.remote(num_gpus=1, num_cpus=0)(_gpu_info)
        count = min(workers, gpus)
        infos = ray.get([probe.remote() for _ in range(count)], timeout=_PROBE_TIMEOUT_S)
        name, free, _ = min(infos, key=lambda info: info[1])
        return WorkerDevice(name, free, gpus)
    shares, total_slots = [], 0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        resources = node["Resources"]
        slots = int(resources.get("CPU", 0) // cpus_per_worker)
        if slots:
            shares.append(int(resources.get("memory", 0) // min(slots, workers)))
            total_slots += slots
    if not shares:
        raise ConfigError("the Ray cluster has no node with a CPU for a worker")
    return WorkerDevice("cpu", min(shares), total_slots)
