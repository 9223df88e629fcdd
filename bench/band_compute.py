"""The compute of one rank's band of a sharded FreeScale step, measured alone on one device: rank r of an
N-rank split (halos included; the other ranks' rows stand in as zeros, nothing is sent), seconds per
dilated CFG step, next to what the cost model predicts for that band. One JSON line per rank.

`freescale plan` uses these measurements for the ranks they match (bench/calibrate_cost_model.py puts
them in the calibration), so an 8-GPU prediction rests on measured bands, not on scaled FLOPs alone.
    GPU:  python bench/band_compute.py --unet sdxl --device cuda --dtype float16 --size 8192 --world 8 \
              --repeats 3 --out r.jsonl
    CPU:  python bench/band_compute.py --unet tiny --size 1024 --world 4 --threads 1 --clock thread
With --compare 1,2,4 it sums every band of each split instead, in interleaved rounds, against the one-rank
step: what sharding adds to the arithmetic, each rank alone on its device as in a real cluster.
"""

from __future__ import annotations

import argparse
import statistics

import sdxl_step
import torch
from sdxl_step import DTYPES, build_unet, emit, synchronize


def band_step(unet, native: int, size: int, group, mode: str):
    """A function timing one dilated CFG step of the band `group` stands for: () -> (seconds, output)."""
    from freescale.cluster.sharding.band_ops import shard_context_of
    from freescale.config.render_config import FREEU_DEFAULT
    from freescale.method.freeu import freeu_applied
    from freescale.method.random_draws import keyed_normal
    from freescale.method.scale_fusion import scale_fusion
    from freescale.models.sdxl_unet import random_unet_kwargs

    shard = shard_context_of(unet)
    shard.group = group
    shard.set_stage((size // 8, size // 8))
    bands = shard.bands
    a, b = shard.band
    kwargs = random_unet_kwargs(unet, 2, (native, native))
    sample = keyed_normal((2, 4, size // 8, size // 8), 0, "bench")[..., a:b, :].to(unet.device, unet.dtype)

    def step():
        shard.group = group  # the UNet has one shard context: steps of other bands may run in between
        shard.set_stage((size // 8, size // 8))
        fusion = scale_fusion(unet, native, (size, size), fast_mode=mode == "fast", freeu=None,
                              jitter_seed=0, shard=shard)  # fmt: skip
        synchronize(sample.device)
        started = sdxl_step.clock()
        with freeu_applied(unet, FREEU_DEFAULT, shard), fusion as handle:
            handle.begin_step(1, 10, dilate=True)
            out = unet(sample, 500, **kwargs, return_dict=False)[0]
        synchronize(sample.device)
        return sdxl_step.clock() - started, out

    return step, bands


def group_of(rank: int, world: int):
    """The production one-rank group for one rank; else rank `rank` of `world` standing alone."""
    from freescale.cluster.sharding.band_alone import BandAloneGroup
    from freescale.cluster.sharding.shard_group import ShardGroup

    return ShardGroup.single() if world == 1 else BandAloneGroup(rank=rank, world=world)


def compare_worlds(unet, native: int, args, device_name: str) -> None:
    """Summed band compute of every split in --compare against the one-rank step, in interleaved rounds
    (one step of each band of each split per round, one after another on this device): the arithmetic
    sharding adds, without the contention of ranks sharing cores. The ratio's median and spread over
    rounds, and the ratio of the bands' fastest steps, summed, to the fastest one-rank step."""
    worlds = [int(w) for w in args.compare.split(",")]
    steps = {
        w: [band_step(unet, native, args.size, group_of(r, w), args.mode)[0] for r in range(w)]
        for w in worlds
    }
    for bands in steps.values():
        for step in bands:
            step()  # warm-up
    times = {w: [[] for _ in range(w)] for w in worlds}  # per split, per rank, one step a round
    for _ in range(args.rounds):
        for world, bands in steps.items():
            for rank, step in enumerate(bands):
                times[world][rank].append(step()[0])
    sums = {w: [sum(round_) for round_ in zip(*times[w], strict=True)] for w in worlds}
    # Interference only ever adds time: each band's fastest step is its least disturbed one.
    fastest = {w: sum(min(t) for t in times[w]) for w in worlds}
    for world in worlds:
        ratios = [s / one for s, one in zip(sums[world], sums[1], strict=True)]
        emit({
            "bench": "band_sum", "unet": args.unet, "device": device_name, "dtype": args.dtype,
            "clock": args.clock, "size": args.size, "mode": args.mode, "world": world, "rounds": args.rounds,
            "summed_s_median": round(statistics.median(sums[world]), 4),
            "vs_one_rank_median": round(statistics.median(ratios), 4),
            "vs_one_rank_spread": [round(min(ratios), 4), round(max(ratios), 4)],
            "summed_fastest_s": round(fastest[world], 4),
            "vs_one_rank_fastest": round(fastest[world] / fastest[1], 4),
        }, args.out)  # fmt: skip


def predicted(unet, native: int, size: int, bands, rank: int, mode: str, device: str, dtype_bytes: int):
    """The cost model's FLOPs and compute seconds for this band (the fitted model, not a measurement)."""
    from freescale.planning.cost_calibration import device_calibration
    from freescale.planning.cost_model import unet_call_cost
    from freescale.planning.model_spec import unet_profile_for
    from freescale.tiling.stages import scale_counts

    profile = unet_profile_for(dict(unet.config))
    cost = unet_call_cost(profile, (size // 8, size // 8), bands, rank, batch=2, mode=mode,
                          counts=scale_counts((size, size), native), dtype_bytes=dtype_bytes)  # fmt: skip
    calibration = device_calibration(device, strict=False)
    return {
        "profile_key": profile.key,
        "model_tflops": round(cost.flops / 1e12, 4),
        "model_predicted_s": round(cost.compute_seconds(calibration, mode), 4),
        "model_calibration": calibration.name,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unet", choices=("sdxl", "tiny"), default="sdxl")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--size", type=int, default=8192, help="the square stage's size in px")
    parser.add_argument("--world", type=int, default=8, help="ranks the stage is split over")
    parser.add_argument("--ranks", help="which ranks to measure, e.g. 0,3 (default: all)")
    parser.add_argument("--mode", choices=("freescale", "fast"), default="freescale")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per rank, after one warm-up")
    parser.add_argument("--compare", help="splits to sum and compare with one rank instead, e.g. 1,2,4")
    parser.add_argument("--rounds", type=int, default=5, help="--compare's interleaved rounds")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--clock", choices=tuple(sdxl_step.CLOCKS), default="wall")
    parser.add_argument("--out", help="also append the JSON lines to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sdxl_step.clock = sdxl_step.CLOCKS[args.clock]
    dtype = DTYPES[args.dtype]
    dtype_bytes = torch.finfo(dtype).bits // 8
    unet, native = build_unet(args.unet, args.device, dtype)
    device = unet.device
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    if args.compare:
        if not args.compare.startswith("1,"):
            parser.error("--compare must start with 1 (the one-rank step every split is compared with)")
        with torch.inference_mode():
            compare_worlds(unet, native, args, device_name)
        return
    ranks = range(args.world) if args.ranks is None else [int(r) for r in args.ranks.split(",")]
    with torch.inference_mode():
        for rank in ranks:
            step, bands = band_step(unet, native, args.size, group_of(rank, args.world), args.mode)
            step()  # warm-up: kernels chosen, buffers sized
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times = []
            for _ in range(args.repeats):
                seconds, out = step()
                times.append(seconds)
            emit({
                "bench": "band_compute", "unet": args.unet, "device": device_name, "dtype": args.dtype,
                "dtype_bytes": dtype_bytes, "clock": args.clock, "size": args.size,
                "latent": [args.size // 8, args.size // 8], "world": args.world, "rank": rank,
                "band": list(bands[rank]), "mode": args.mode, "batch": 2, "dilate": True, "freeu": True,
                "seconds_per_step": round(statistics.median(times), 4), "timed_runs": len(times),
                "spread_s": [round(min(times), 4), round(max(times), 4)],
                "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                if device.type == "cuda" else None,
                "output_finite": bool(torch.isfinite(out).all()),
                **predicted(unet, native, args.size, bands, rank, args.mode, device_name, dtype_bytes),
            }, args.out)  # fmt: skip


if __name__ == "__main__":
    main()
