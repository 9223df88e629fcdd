"""Sharding cost of one high-resolution UNet step on 1, 2 and 4 local gloo ranks (one thread each).

Prints per rank: bytes sent per step by kind, seconds in communication vs compute (CPU time of
the rank's own thread outside collectives, so ranks sharing cores are measured fairly; its CPU time inside
collectives is reported apart, as communication), the peak activation it holds,
and the ratios against one rank; one JSON line per stage size and rank count.
Usage: python bench/sharding.py [--sizes 512,1024] [--ranks 1,2,4] [--steps 2] [--fast-mode] [--repeats 3]
With --repeats N the rank counts run N times in turn (1, 2, 4, 1, 2, 4, ...), each ratio against the one
rank of its own round, and a summary line gives each count's median ratio and its spread (single runs on a
shared machine vary a lot). Two further counts: the same ratio against one rank timed while --loaded-cores
copies of it run at once (as busy a machine as the sharded ranks see), and two counts no other load can
move: summed FLOPs (FlopCounterMode: the arithmetic sharding repeats) and summed bytes moved (every
computing operator's tensor inputs and outputs: the memory-bound work sharding adds, copies included),
with the operators that add the most bytes over one rank.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import Counter

import torch
from work_counts import CPU_ATTENTION_FLOPS, BytesMovedMode  # bench/ is on the path of a script run from it


def _normal(value):
    """A copy of an inference-mode tensor (or of each one in a dict) usable outside inference mode."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value.clone() if isinstance(value, torch.Tensor) else value


def unet_steps(group, size: int, steps: int, fast_mode: bool) -> dict:
    import torch.distributed as dist
    from torch.utils.flop_counter import FlopCounterMode

    from freescale.cluster.sharding.band_ops import shard_context_of
    from freescale.config.render_config import FREEU_DEFAULT
    from freescale.method.freeu import freeu_applied
    from freescale.method.random_draws import keyed_normal
    from freescale.method.scale_fusion import scale_fusion
    from freescale.models.conditioning import encode_conditioning
    from freescale.models.loading import load_model, resolve_model_source

    model = load_model(resolve_model_source("tiny"), device="cpu")
    unet = model.pipe.unet
    shard = shard_context_of(unet)
    shard.group = group
    latent = (size // 8, size // 8)
    shard.set_stage(latent)
    a, b = shard.band
    cond = encode_conditioning(model.pipe, "a red fox", "blurry", 7.5, (model.native_size,) * 2)
    sample = keyed_normal((1, 4, *latent), 0, "bench")[..., a:b, :]
    peak = [0]

    def record(module, args, output):
        if isinstance(output, torch.Tensor):
            peak[0] = max(peak[0], output.nbytes)

    hooks = [m.register_forward_hook(record) for m in unet.modules()]
    fusion = scale_fusion(unet, model.native_size, (size, size), fast_mode=fast_mode, freeu=None,
                          jitter_seed=0, shard=shard)  # fmt: skip
    with torch.inference_mode(), freeu_applied(unet, FREEU_DEFAULT, shard), fusion as handle:
        batch = torch.cat([sample] * 2)
        handle.begin_step(1, 0)
        unet(batch, 500, **cond.unet_kwargs())  # warm-up
        if group.world > 1:
            dist.barrier()
        group.stats.reset()
        wall, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
        for step in range(steps):
            handle.begin_step(1, step + 1, dilate=True)
            unet(batch, 500, **cond.unet_kwargs())
        wall, cpu, main = time.perf_counter() - wall, time.process_time() - cpu, time.thread_time() - main
        # The same step again, its arithmetic counted: a number no other process on the machine can move.
        with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as flops:
            handle.begin_step(1, 1, dilate=True)
            unet(batch, 500, **cond.unet_kwargs())
        # Out of inference mode (no_grad instead), where the counter sees composite operators decomposed and
        # so the copies inside a reshape or a tensordot.
        with torch.inference_mode(False), torch.no_grad():
            inputs, kwargs = batch.clone(), _normal(cond.unet_kwargs())
            with BytesMovedMode() as moved:
                handle.begin_step(1, 1, dilate=True)
                unet(inputs, 500, **kwargs)
    for hook in hooks:
        hook.remove()
    comm = sum(group.stats.seconds.values())
    comm_cpu = sum(group.stats.cpu_seconds.values())
    return {
        "rank": group.rank,
        "band_rows": b - a,
        "wall_s_per_step": wall / steps,
        "comm_s_per_step": comm / steps,
        "cpu_s_per_step": cpu / steps,  # the whole process, gloo's transport threads included
        "thread_s_per_step": main / steps,  # the rank's own thread (1 torch thread): arithmetic and sending
        "comm_cpu_s_per_step": comm_cpu / steps,  # ... of which inside collectives
        "compute_s_per_step": (main - comm_cpu) / steps,  # ... the rest: the model's arithmetic
        "flops_per_step": flops.get_total_flops(),
        "bytes_moved_per_step": moved.bytes,
        "bytes_moved_by_operator": dict(moved.bytes_by_operator.most_common()),
        "bytes_sent_per_step": {k: v // steps for k, v in group.stats.bytes_sent.items()},
        "peak_activation_bytes": peak[0],
    }


def unet_steps_unsharded(group, size: int, steps: int, fast_mode: bool) -> dict:
    """One rank's whole unsharded steps, run by every process at once and ignoring their group: the one-rank
    baseline measured with every core busy, as the sharded ranks run (one rank alone on an idle machine
    gets the memory bandwidth and clock of all of it)."""
    from freescale.cluster.sharding.shard_group import ShardGroup

    return unet_steps(ShardGroup.single(), size, steps, fast_mode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512,1024", help="stage sizes in px (tiny model: native 128)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--ranks", default="1,2,4")
    parser.add_argument("--fast-mode", action="store_true")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of every rank count (median, spread)")
    parser.add_argument("--loaded-cores", type=int, default=os.cpu_count() or 1,
                        help="also time one rank while this many copies run at once (0: not)")  # fmt: skip
    args = parser.parse_args()
    worlds = [int(r) for r in args.ranks.split(",")]
    for size in [int(s) for s in args.sizes.split(",")]:
        rounds = [
            measure(size, worlds, args.steps, args.fast_mode, args.loaded_cores) for _ in range(args.repeats)
        ]
        if args.repeats > 1:
            print(json.dumps(summary(size, worlds, rounds, args.fast_mode)), flush=True)


def summary(size: int, worlds: list[int], rounds: list[dict[str, dict[int, float]]], fast_mode: bool) -> dict:
    """Each rank count's ratios to one rank over the rounds (median, lowest, highest): summed compute against
    one rank alone and against one rank on a loaded machine, and summed FLOPs and bytes moved."""
    line = {
        "bench": "sharding_summary",
        "model": "tiny",
        "size": size,
        "fast_mode": fast_mode,
        "rounds": len(rounds),
    }
    for kind in rounds[0]:
        ratios = {w: sorted(r[kind][w] for r in rounds) for w in worlds if w in rounds[0][kind]}
        line[kind] = {
            str(w): {"median": round(statistics.median(v), 4), "min": round(v[0], 4), "max": round(v[-1], 4)}
            for w, v in ratios.items()
        }
    return line


def measure(size: int, worlds: list[int], steps: int, fast_mode: bool, loaded_cores: int) -> dict:
    """One round: every rank count once, one JSON line each; each ratio kind's value per rank count."""
    from freescale.cluster.sharding.local_ranks import run_ranks

    loaded = None
    if loaded_cores:
        copies = run_ranks(loaded_cores, unet_steps_unsharded, size, steps, fast_mode)
        loaded = statistics.mean(r["compute_s_per_step"] for r in copies)
        line = {
            "bench": "sharding_loaded_baseline", "model": "tiny", "size": size,
            "copies_at_once": loaded_cores, "compute_s_per_step": round(loaded, 3),
            "per_copy": [round(r["compute_s_per_step"], 3) for r in copies],
        }  # fmt: skip
        print(json.dumps(line), flush=True)
    baseline = None
    ratios: dict[str, dict[int, float]] = {
        "compute_ratio_vs_1_rank": {}, "flops_ratio_vs_1_rank": {}, "bytes_moved_ratio_vs_1_rank": {}
    }  # fmt: skip
    if loaded:
        ratios["compute_ratio_vs_loaded_1_rank"] = {}
    for world in worlds:
        ranks = run_ranks(world, unet_steps, size, steps, fast_mode)
        cpu_total = sum(r["cpu_s_per_step"] for r in ranks)
        compute_total = sum(r["compute_s_per_step"] for r in ranks)
        comm_cpu_total = sum(r["comm_cpu_s_per_step"] for r in ranks)
        flops_total = sum(r["flops_per_step"] for r in ranks)
        moved_total = sum(r["bytes_moved_per_step"] for r in ranks)
        by_operator = sum((Counter(r.pop("bytes_moved_by_operator")) for r in ranks), Counter())
        peak = max(r["peak_activation_bytes"] for r in ranks)
        if baseline is None:
            baseline = {"cpu": cpu_total, "compute": compute_total, "peak": peak, "flops": flops_total,
                        "moved": moved_total, "by_operator": by_operator}  # fmt: skip
        one_rank_by_operator = baseline["by_operator"]
        above = {op: by_operator[op] - one_rank_by_operator[op] for op in by_operator | one_rank_by_operator}
        line = {
            "bench": "sharding", "model": "tiny", "size": size, "fast_mode": fast_mode,
            "ranks": world, "threads_per_rank": 1,
            "cpu_s_per_step_all_ranks": round(cpu_total, 3),
            "cpu_ratio_vs_1_rank": round(cpu_total / baseline["cpu"], 3),
            "compute_s_per_step_all_ranks": round(compute_total, 3),
            "compute_ratio_vs_1_rank": round(compute_total / baseline["compute"], 3),
            "compute_ratio_vs_loaded_1_rank": round(compute_total / loaded, 3) if loaded else None,
            "comm_cpu_s_per_step_all_ranks": round(comm_cpu_total, 3),
            "flops_ratio_vs_1_rank": round(flops_total / baseline["flops"], 4),
            "bytes_moved_ratio_vs_1_rank": round(moved_total / baseline["moved"], 4),
            # Where sharding's extra bytes go: the operators adding the most, summed over ranks.
            "bytes_above_1_rank_by_operator": dict(sorted(above.items(), key=lambda kv: -kv[1])[:6]),
            "peak_activation_bytes_max_rank": peak,
            "peak_activation_ratio_vs_1_rank": round(peak / baseline["peak"], 3),
            "per_rank": ranks,
        }  # fmt: skip
        print(json.dumps(line), flush=True)
        ratios["compute_ratio_vs_1_rank"][world] = compute_total / baseline["compute"]
        ratios["flops_ratio_vs_1_rank"][world] = flops_total / baseline["flops"]
        ratios["bytes_moved_ratio_vs_1_rank"][world] = moved_total / baseline["moved"]
        if loaded:
            ratios["compute_ratio_vs_loaded_1_rank"][world] = compute_total / loaded
    return ratios


if __name__ == "__main__":
    main()
