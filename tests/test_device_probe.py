"""The device probe of the preflight check: free memory per worker as a Ray cluster reports it (a fake
Ray of two nodes), and this machine's device for an in-process render."""

import pytest

from freescale.errors import ConfigError


class FakeRay:
    """The few Ray calls device_memory makes, for a cluster of two nodes (or two GPUs)."""

    def __init__(self, gpus: list[tuple[str, int, int]]):
        self.gpus = gpus
        self.initialized = False

    def is_initialized(self):
        return self.initialized

    def init(self, **_):
        self.initialized = True

    def shutdown(self):
        self.initialized = False

    def cluster_resources(self):
        return {"CPU": 12.0, "GPU": float(len(self.gpus))}

    def nodes(self):
        return [
            {"Alive": True, "Resources": {"CPU": 8.0, "memory": 64e9}},
            {"Alive": True, "Resources": {"CPU": 4.0, "memory": 20e9}},
            {"Alive": False, "Resources": {"CPU": 64.0, "memory": 1e9}},
        ]

    def remote(self, **_):
        gpus = iter(self.gpus)

        class Task:
            @staticmethod
            def remote():
                return next(gpus)

        return lambda fn: Task

    def get(self, refs, timeout=None):
        return list(refs)


def test_device_memory_as_ray_reports_it(monkeypatch):
    import sys

    from freescale.cluster.ray.device_probe import ray_worker_devices
    from freescale.cluster.ray.session import RaySession
    from freescale.planning.device_memory import local_device

    def query_worker_devices(workers, use_gpu=None):
        """As `freescale render` asks: in a session of the command's own, shut down again after."""
        with RaySession() as session:
            session.ensure()
            return ray_worker_devices(workers, use_gpu)

    assert local_device("cpu").name == "cpu" and local_device("cpu").memory_bytes > 0
    fake = FakeRay(
        [("NVIDIA H200", 140 * 2**30, 141 * 2**30), ("NVIDIA H100 80GB HBM3", 78 * 2**30, 80 * 2**30)]
    )
    monkeypatch.setitem(sys.modules, "ray", fake)
    found = query_worker_devices(8)  # the smallest of the GPUs counts; Ray is shut down again
    assert (found.name, found.memory_bytes, found.devices) == ("NVIDIA H100 80GB HBM3", 78 * 2**30, 2)
    assert not fake.initialized
    # CPU workers: 4 of them share the first node's memory, and all the second node's 4 CPUs its own.
    found = query_worker_devices(4, use_gpu=False)
    assert (found.name, found.memory_bytes, found.devices) == ("cpu", int(20e9 // 4), 12)
    monkeypatch.setitem(sys.modules, "ray", FakeRay([]))
    with pytest.raises(ConfigError, match="no GPUs"):
        query_worker_devices(2, use_gpu=True)
