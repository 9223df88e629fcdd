"""Refuse, before anything heavy is loaded, a render whose per-worker memory estimate exceeds the workers'
devices, naming the stage and the numbers, and suggest what fits: the fewest workers, or other options."""

from __future__ import annotations

import dataclasses

from freescale.errors import ConfigError
from freescale.planning.plan import GIB, Plan, memory_breakdown, plan_request


def _replanned(plan: Plan, **changes) -> Plan:
    return plan_request(dataclasses.replace(plan.request, **changes), plan.model, plan.device, plan.link)


def _fits(plan: Plan, memory: float, **changes) -> bool:
    return _replanned(plan, **changes).peak_bytes <= memory


def worker_cap(plan: Plan) -> int:
    """The most workers worth trying: one band unit (align latent rows) of the largest stage each."""
    unit = plan.model.vae_scale * plan.model.unet.align
    return max(h // unit for h, _ in plan.request.stages) * (2 if plan.request.cfg_parallel else 1)


def smallest_workers(plan: Plan, memory: float) -> int | None:
    """The fewest workers (more than the plan's; even with --cfg-parallel) whose estimate fits `memory`,
    or None if not even `worker_cap` workers fit."""
    r = plan.request
    step, cap = (2 if r.cfg_parallel else 1), worker_cap(plan)
    low, high, candidate = r.workers, None, r.workers
    while candidate < cap:  # double until one fits, then bisect (the estimate falls with more workers)
        candidate = min(cap, max(candidate * 2, candidate + step))
        if _fits(plan, memory, workers=candidate):
            high = candidate
            break
        low = candidate
    if high is None:
        return None
    while high - low > step:
        middle = (low + high) // 2 // step * step
        if middle <= low:
            break
        if _fits(plan, memory, workers=middle):
            high = middle
        else:
            low = middle
    return high


def preflight(plan: Plan, device_memory_bytes: float, available_workers: int | None = None) -> None:
    """Raise ConfigError when the plan's per-worker peak exceeds `device_memory_bytes` (the smallest
    device Ray reports), with what would fit instead; `available_workers` (the devices the cluster
    has) is only mentioned when the suggestion needs more."""
    need = plan.peak_bytes
    if need <= device_memory_bytes:
        return
    r = plan.request
    stage = max(plan.stages, key=lambda s: s.peak.peak_bytes)
    if stage.peak.peak_bytes >= need:
        ranks = f"{stage.ranks} rank{'s' if stage.ranks > 1 else ''}"
        size = f"{stage.size[1]}x{stage.size[0]}"
        where = (f"stage {stage.index} ({size}, {ranks}) needs about {need / GIB:.1f} GiB per worker "
                 f"({memory_breakdown(stage.peak.memory)} GiB)")  # fmt: skip
    else:
        where = f"decoding the output needs about {need / GIB:.1f} GiB per worker"
    message = (
        f"the render does not fit: {where}, but the workers' devices have {device_memory_bytes / GIB:.1f} GiB"
    )
    weights = plan.model.weights_bytes(r.dtype_bytes)
    if weights >= device_memory_bytes:
        raise ConfigError(f"{message}; the model's weights alone take {weights / GIB:.1f} GiB, so no number "
                          "of workers helps: use devices with more memory")  # fmt: skip
    options = []
    workers = smallest_workers(plan, device_memory_bytes)
    if workers is not None:
        short = available_workers is not None and workers > available_workers
        options.append(f"--workers {workers}{' --cfg-parallel' if r.cfg_parallel else ''}"
                       + (f" (the cluster has {available_workers})" if short else ""))  # fmt: skip
    if not r.fast_mode and _fits(plan, device_memory_bytes, fast_mode=True):
        options.append("--fast-mode")
    halves = not r.cfg_parallel and r.workers % 2 == 0 and r.guidance > 1
    if halves and _fits(plan, device_memory_bytes, cfg_parallel=True):
        options.append("--cfg-parallel")
    if options:
        raise ConfigError(f"{message}; it would fit with {' or with '.join(options)} (see `freescale plan`)")
    floor = _replanned(plan, workers=worker_cap(plan)).peak_bytes
    raise ConfigError(
        f"{message}; even {worker_cap(plan)} workers would need {floor / GIB:.1f} GiB each (the weights and "
        "the VAE's tile working set do not shrink with more workers): use devices with more memory"
    )
