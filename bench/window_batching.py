"""Batched local windows against attending window by window (the reference's loop), per grid size.

Same projections, same windows; only how the windows reach scaled_dot_product_attention differs.
Prints one JSON line per (grid, n): median seconds of each and the batched/looped ratio, plus the
bytes one batched call gathers (bounded by WINDOW_TOKENS_PER_CALL chunks).
Usage: python bench/window_batching.py [--grids 32,64,128] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def looped(qkv: torch.Tensor, windows, heads: int) -> torch.Tensor:
    """The reference's order of work: one attention call per window, accumulate, divide by count."""
    from freescale.method.window_attention import attend, window_slices

    _, batch, tokens, channels = qkv.shape
    width = windows.padded_grid[1]
    grid = qkv.view(3, batch, tokens // width, width, channels)
    total = torch.zeros(grid.shape[1:], dtype=qkv.dtype)
    count = torch.zeros(grid.shape[2:4], dtype=qkv.dtype)
    for rows, cols in window_slices(windows):
        q, k, v = (t[:, rows, cols].reshape(batch, -1, channels) for t in grid)
        total[:, rows, cols] += attend(q, k, v, heads).view(batch, rows.stop - rows.start, -1, channels)
        count[rows, cols] += 1
    return (total / count.clamp(min=1)[None, :, :, None]).view(batch, tokens, channels)


def main() -> None:
    from freescale.method import window_attention
    from freescale.tiling.windows import local_windows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", default="32,64,128", help="token grid sides")
    parser.add_argument("--counts", default="2,4,8", help="scale counts n")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for side in [int(g) for g in args.grids.split(",")]:
        for n in [int(c) for c in args.counts.split(",")]:
            windows = local_windows((side, side), n, key=1)
            hp, wp = windows.padded_grid
            qkv = torch.randn(3, 2, hp * wp, args.channels)
            per_window = windows.size[0] * windows.size[1]
            chunk = window_attention.windows_per_call(windows, 2, args.channels, qkv.dtype, qkv.device)
            times = {"batched": [], "looped": []}
            for _ in range(args.repeats + 1):  # the first round warms up
                for name, fn in (("batched", window_attention.local_attention), ("looped", looped)):
                    started = time.perf_counter()
                    fn(qkv, windows, args.heads)
                    times[name].append(time.perf_counter() - started)
            median = {k: statistics.median(v[1:]) for k, v in times.items()}
            gathered = 3 * 2 * min(chunk, len(windows.corners)) * per_window * args.channels * 4
            print(json.dumps({
                "bench": "window_batching", "grid": side, "n": n, "windows": len(windows.corners),
                "window_tokens": per_window, "threads": args.threads,
                "seconds": {k: round(v, 5) for k, v in median.items()},
                "batched_vs_looped": round(median["batched"] / median["looped"], 3),
                "gathered_bytes_per_call": gathered,
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
