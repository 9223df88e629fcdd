"""A whole render sharded over 1, 2 and 4 ranks that all run on one device (a host-staged gloo group: NCCL
refuses two ranks on one GPU), against the one-rank render: the sharded path's pixels and seconds on the
device. Every rank runs the production entry point (`render_on_rank`), as a Ray worker does. JSON lines.
    GPU:  python bench/sharded_render.py --device cuda --dtype fp16 --ranks 1,2,4
    CPU:  python bench/sharded_render.py --device cpu --dtype fp32 --ranks 1,2 --steps 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sdxl_step import emit


def render_rank(group, settings: dict) -> dict:
    """One rank's share of the render: its rows of the last stage's image, and its seconds."""
    from freescale.cluster.sharding.rank_state import RankState
    from freescale.config.render_config import build_config
    from freescale.models.loading import load_model, resolve_model_source
    from freescale.rendering.rank_render import render_on_rank, take_strip

    source = resolve_model_source(settings["model"])
    model = load_model(source, device=settings["device"], dtype=settings["dtype"])
    state = RankState(group.rank, group.world, group, model, model.device)
    values = {k: settings[k] for k in ("prompt", "scale", "steps", "seed", "model", "fast_mode")}
    config = build_config({**values, "output": "unused.png"}, native_size=model.native_size)
    started = time.perf_counter()
    render_on_rank(state, config)
    strips = []
    while (strip := take_strip(state, len(config.stages) - 1)) is not None:
        strips.append(strip)
    seconds = time.perf_counter() - started
    return {"rows": np.concatenate(strips) if strips else None, "seconds": seconds}


def main() -> None:
    from freescale.cluster.sharding.local_ranks import run_ranks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp16")
    parser.add_argument("--ranks", default="1,2,4", help="rank counts; the first is the baseline")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--scale", type=int, default=4, help="the last stage's size over the native size")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--fast-mode", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per rank")
    parser.add_argument("--out", help="also append the JSON lines to this file")
    args = parser.parse_args()
    settings = {
        "prompt": "a lighthouse on a cliff at dusk", "scale": args.scale, "steps": args.steps, "seed": 7,
        "model": args.model, "fast_mode": args.fast_mode, "device": args.device, "dtype": args.dtype,
    }  # fmt: skip
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    baseline = None
    for world in (int(n) for n in args.ranks.split(",")):
        ranks = run_ranks(world, render_rank, settings, threads=args.threads)
        image = np.concatenate([r["rows"] for r in ranks if r["rows"] is not None]).astype(np.int16)
        baseline = image if baseline is None else baseline
        difference = np.abs(image - baseline)
        row = {
            "bench": "sharded_render", "device": device_name, "dtype": args.dtype, "model": args.model,
            "size": list(image.shape[:2]), "steps": args.steps, "fast_mode": args.fast_mode, "ranks": world,
            "seconds": round(max(r["seconds"] for r in ranks), 2),
            "max_pixel_difference_vs_first": int(difference.max()),
            "mean_pixel_difference_vs_first": round(float(difference.mean()), 4),
        }  # fmt: skip
        emit(row, args.out)


if __name__ == "__main__":
    main()
