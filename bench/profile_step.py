"""Where one SDXL-architecture UNet step spends its device time, by operator (torch.profiler), for
direct inference and FreeScale: prints each mode's top operators and writes them as JSON lines.
Usage on a GPU: python bench/profile_step.py --sizes 2048,8192 --modes direct,freescale,fast --out p.jsonl
CPU, the tiny model read as native 1024 (as in bench/reference_side_by_side.py):
    python bench/profile_step.py --unet tiny --device cpu --dtype float32 --native 1024 --sizes 2048 \
        --modes direct,freescale
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from sdxl_step import DTYPES, build_unet, one_step
from torch.profiler import ProfilerActivity, profile


def main() -> None:
    from freescale.method.random_draws import keyed_normal
    from freescale.models.sdxl_unet import random_unet_kwargs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unet", choices=("sdxl", "tiny"), default="sdxl")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float16")
    parser.add_argument("--sizes", default="2048")
    parser.add_argument("--modes", default="direct,freescale,fast")
    parser.add_argument("--top", type=int, default=18)
    parser.add_argument("--native", type=int, help="read the UNet as this native size (the reference's 1024)")
    parser.add_argument("--out")
    args = parser.parse_args()
    unet, native = build_unet(args.unet, args.device, DTYPES[args.dtype])
    native = args.native or native
    cuda = unet.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    kwargs = random_unet_kwargs(unet, 2, (native, native))
    for size in (int(s) for s in args.sizes.split(",")):
        latent = keyed_normal((2, 4, size // 8, size // 8), 0, "bench").to(unet.device, unet.dtype)
        for mode in args.modes.split(","):
            with torch.inference_mode():
                if size <= 4096:
                    one_step(unet, native, kwargs, latent, mode)  # warm-up
                started = time.perf_counter()
                with profile(activities=activities) as prof:
                    one_step(unet, native, kwargs, latent, mode)
                wall = time.perf_counter() - started
            events = prof.key_averages()
            key = "self_device_time_total" if cuda else "self_cpu_time_total"
            rows = sorted(events, key=lambda e: getattr(e, key), reverse=True)[: args.top]
            device_total = sum(getattr(e, key) for e in events) / 1e6
            print(
                f"\n== size {size} mode {mode}: wall {wall:.3f} s (profiled), device ops {device_total:.3f} s"
            )
            runtime = sorted(
                (e for e in events if e.key.startswith("cuda")), key=lambda e: e.self_cpu_time_total
            )
            for e in runtime[-4:]:
                print(f"   runtime {e.key}: {e.count} calls, cpu {e.self_cpu_time_total / 1e6:.4f} s")
            for e in rows:
                line = {"bench": "profile_step", "size": size, "mode": mode, "op": e.key,
                        "device_s": round(getattr(e, key) / 1e6, 4), "calls": e.count,
                        "cpu_s": round(e.self_cpu_time_total / 1e6, 4)}  # fmt: skip
                print(f"{line['device_s']:9.4f} s {e.count:6d} calls  cpu {line['cpu_s']:8.4f}  {e.key[:90]}")
                if args.out:
                    with open(args.out, "a", encoding="utf-8") as handle:
                        handle.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
