"""Process-group helpers that run inside a Ray actor: rendezvous address, free port, init and teardown."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket

import ray
import torch
import torch.distributed as dist

from freescale.cluster.sharding.shard_group import ShardGroup


def node_address() -> str:
    """This node's IP as Ray sees it, so peers on other nodes can reach the rendezvous."""
    return ray.util.get_node_ip_address()


def free_port() -> int:
    """A port that was free on `node_address()` a moment ago (the rendezvous binds it shortly after)."""
    address = node_address()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def has_gpu() -> bool:
    """True when Ray gave this actor a GPU and torch can use it."""
    return bool(ray.get_gpu_ids()) and torch.cuda.is_available()


def default_backend() -> str:
    return "nccl" if has_gpu() else "gloo"


def _interface_of(address: str) -> str | None:
    """The network interface that holds `address`, or None when it is not local or cannot be found."""
    try:
        import psutil  # a Ray dependency
    except ImportError:
        return None
    for name, addresses in psutil.net_if_addrs().items():
        if any(a.address.split("%")[0] == address for a in addresses):
            return name
    return None


def _pin_gloo_interface(address: str) -> None:
    """Make gloo use the interface Ray uses on this node.

    Gloo otherwise picks the address this host's name resolves to, which is often 127.0.0.1 (it is on the
    test VM): fine on one node, but peers on other nodes would then be told to connect to loopback.
    """
    if os.environ.get("GLOO_SOCKET_IFNAME"):
        return
    try:
        if ipaddress.ip_address(address).is_loopback:
            return
    except ValueError:
        return
    interface = _interface_of(address)
    if interface is not None:
        os.environ["GLOO_SOCKET_IFNAME"] = interface


def init_process_group(
    rank: int,
    world: int,
    address: str,
    port: int,
    backend: str | None = None,
    timeout_s: float = 600.0,
) -> ShardGroup:
    """Join the default process group at tcp://address:port and return its ShardGroup.

    The timeout bounds every collective too, so a peer that dies makes the others fail instead of
    blocking forever. `backend` None picks nccl when this actor has a GPU, else gloo.
    """
    backend = backend or default_backend()
    if dist.is_initialized():
        # A second setup on the same actor must not reuse a group whose peers may have changed.
        dist.destroy_process_group()
    if backend == "nccl":
        # Ray narrows CUDA_VISIBLE_DEVICES to this actor's GPU, so it is always device 0 here.
        torch.cuda.set_device(0)
    if backend == "gloo":
        _pin_gloo_interface(node_address())
    host = f"[{address}]" if ":" in address else address
    dist.init_process_group(
        backend=backend,
        init_method=f"tcp://{host}:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return ShardGroup(rank, world)


def destroy_process_group() -> None:
    """Leave the default process group; a no-op when there is none, so it is safe to call twice."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
