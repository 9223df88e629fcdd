"""A plan as the table `freescale plan` prints, or as JSON (`--json`)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from freescale.planning.plan import GIB, Plan, StageEstimate, memory_breakdown
from freescale.tiling.fitted_stages import crop_offsets


def _size(size: tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _bands(stage: StageEstimate) -> str:
    rows = sorted({r.band[1] - r.band[0] for r in stage.per_rank})
    return "-".join(str(r) for r in (rows[0], rows[-1])) if len(rows) > 1 else str(rows[0])


def format_plan(plan: Plan) -> str:
    """The readable table: one line per stage (its slowest rank), then totals, memory and assumptions."""
    r, model = plan.request, plan.model
    group = f"2 groups of {r.workers // 2} (--cfg-parallel)" if r.cfg_parallel else str(r.workers)
    lines = [
        f"freescale plan: {_size(r.stages[-1])} with {model.name} (native {model.native_size}), "
        f"{'fast mode, ' if r.fast_mode else ''}{r.steps} steps (upper stages from step {r.restart_step}), "
        f"workers {group}, link {plan.link.name}, calibration {plan.device.name}",
        "",
        f"{'stage':<6}{'size':>12}{'mode':>10}{'ranks':>6}{'rows/rank':>10}{'steps':>6}"
        f"{'TFLOP/step':>11}{'MB sent':>9}{'comm s':>8}{'s/step':>9}{'UNet':>10}{'VAE':>9}{'GiB/rank':>9}",
    ]
    for s in plan.stages:
        worst = max(s.per_rank, key=lambda x: x.compute_s_per_step + x.comm_s_per_step)
        sent = sum(worst.bytes_per_step.values()) / 1e6
        lines.append(
            f"{s.index:<6}{_size(s.size):>12}{s.mode:>10}{s.ranks:>6}{_bands(s):>10}{s.steps:>6}"
            f"{worst.tflops_per_step:>11.4g}{sent:>9.0f}{worst.comm_s_per_step:>8.3f}{s.step_s:>9.3f}"
            f"{_duration(s.unet_s):>10}{_duration(s.vae_s):>9}{s.peak.peak_bytes / GIB:>9.1f}"
        )
    lines.append(f"output decode: {_duration(plan.output_s)}    total: {_duration(plan.total_s)}")
    peak_stage = max(plan.stages, key=lambda s: s.peak.peak_bytes)
    parts = memory_breakdown(peak_stage.peak.memory)
    lines.append(
        f"peak memory per worker: {plan.peak_bytes / GIB:.1f} GiB at stage {peak_stage.index} "
        f"(rank {peak_stage.peak.rank}: {parts} GiB; the UNet and the VAE never run together)"
    )
    last = plan.stages[-1]
    if len(last.per_rank) > 1:
        kinds = {k: v / 1e6 for k, v in max(last.per_rank, key=lambda x: sum(x.bytes_per_step.values()))
                 .bytes_per_step.items() if v}  # fmt: skip
        lines.append(
            f"sharding: stage {last.index}'s {last.latent[0]} latent rows in {last.ranks} bands of "
            f"{_bands(last)} rows (aligned to {plan.model.unet.align}); per step a rank sends "
            + ", ".join(f"{k} {v:.0f} MB" for k, v in kinds.items())
        )
    lines += [f"note: {note}" for note in plan.notes]
    return "\n".join(lines)


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as plain data: every stage and every rank, bytes and seconds (what --json prints)."""
    r = plan.request
    return {
        "model": plan.model.name,
        "native_size": plan.model.native_size,
        "device_calibration": plan.device.name,
        "link": dataclasses.asdict(plan.link),
        "workers": r.workers,
        "fast_mode": r.fast_mode,
        "cfg_parallel": r.cfg_parallel,
        "steps": r.steps,
        "restart_step": r.restart_step,
        "dtype_bytes": r.dtype_bytes,
        "weights_bytes": plan.model.weights_bytes(r.dtype_bytes),
        "stages": [_stage_json(s) for s in plan.stages],
        "output_decode_s": round(plan.output_s, 3),
        "total_s": round(plan.total_s, 3),
        "peak_bytes_per_worker": int(plan.peak_bytes),
        "notes": plan.notes,
    }


def _stage_json(s: StageEstimate) -> dict[str, Any]:
    return {
        "index": s.index, "size": [s.size[1], s.size[0]], "latent": list(s.latent), "mode": s.mode,
        "ranks": s.ranks, "batch": s.batch, "steps": s.steps, "dilated_steps": s.dilated_steps,
        "step_s": round(s.step_s, 4), "unet_s": round(s.unet_s, 3), "vae_s": round(s.vae_s, 3),
        "seconds": round(s.seconds, 3), "peak_bytes": int(s.peak.peak_bytes),
        "per_rank": [
            {"rank": r.rank, "band": list(r.band), "tflops_per_step": round(r.tflops_per_step, 3),
             "bytes_per_step": r.bytes_per_step, "collectives_per_step": r.collectives_per_step,
             "compute_s_per_step": round(r.compute_s_per_step, 4), "compute_measured": r.compute_measured,
             "comm_s_per_step": round(r.comm_s_per_step, 4), "vae_s": round(r.vae_s, 3),
             "peak_bytes": int(r.peak_bytes),
             "memory": {k: int(v) for k, v in r.memory.items()}}
            for r in s.per_rank
        ],
    }  # fmt: skip


def plan_json(plan: Plan, output: dict[str, Any] | None = None) -> str:
    """The plan as JSON; `output` (`output_fit`) adds how the written image comes from the last stage."""
    data = plan_to_dict(plan)
    if output is not None:
        data["output"] = output
    return json.dumps(data, indent=1)


def output_fit(
    last: tuple[int, int], image_size: tuple[int, int] | None, fit: str, dpi: int | None = None
) -> dict[str, Any]:
    """The written image: its size [W, H], and whether it is the last stage, its centre (the crop box's
    left and top) or the last stage resized; its DPI tag."""
    size = image_size or last
    how = "stage" if tuple(size) == tuple(last) else fit
    data: dict[str, Any] = {"size": [size[1], size[0]], "last_stage": [last[1], last[0]], "fit": how}
    if how == "crop":
        top, left = crop_offsets(last, size)
        data["crop"] = {"left": left, "top": top, "width": size[1], "height": size[0]}
    data["dpi"] = dpi
    return data


def format_output_fit(output: dict[str, Any]) -> str:
    """One line: the output size and how it comes from the last stage."""
    size, last = "x".join(map(str, output["size"])), "x".join(map(str, output["last_stage"]))
    line = f"output: {size}"
    if output["fit"] == "crop":
        box = output["crop"]
        line += f", the centre of the last stage {last} (left {box['left']}, top {box['top']})"
    elif output["fit"] == "resize":
        line += f", the last stage {last} resized (Lanczos)"
    else:
        line += ", the last stage as rendered"
    return line + (f", tagged {output['dpi']} dpi" if output["dpi"] else "")
