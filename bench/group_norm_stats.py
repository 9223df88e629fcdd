"""A band's GroupNorm statistics three ways, best of N on one thread: torch.var_mean over each group (what
the sharded GroupNorm used), GroupNorm's own kernel (native_group_norm, what it uses now: mean and rstd),
and a whole F.group_norm for scale. One JSON line per band shape.
Usage: python bench/group_norm_stats.py [--device cpu] [--repeats 10] [--out r.jsonl]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from sdxl_step import emit, synchronize

# (batch, channels, rows, cols) of UNet bands: the tiny model's at 1024^2 over 4 ranks, SDXL-sized ones.
SHAPES = ((2, 64, 16, 64), (2, 64, 64, 64), (2, 128, 32, 128), (2, 320, 64, 256), (2, 640, 32, 128))
GROUPS = 32


def best_ms(fn, repeats: int, device: torch.device) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best * 1e3


def timings(x: torch.Tensor, repeats: int) -> dict:
    b, c = x.shape[:2]
    grouped = x.reshape(b, GROUPS, -1)
    hw = x.numel() // (b * c)
    native = torch.ops.aten.native_group_norm
    ways = {
        "var_mean_ms": lambda: torch.var_mean(grouped, dim=-1, correction=0),
        "native_group_norm_ms": lambda: native(x, None, None, b, c, hw, GROUPS, 1e-5),
        "group_norm_ms": lambda: F.group_norm(x, GROUPS),
    }
    return {name: round(best_ms(fn, repeats, x.device), 3) for name, fn in ways.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    for shape in SHAPES:
        row = {"bench": "group_norm_stats", "device": args.device, "threads": args.threads}
        row["shape"] = list(shape)
        row.update(timings(torch.randn(*shape, device=device), args.repeats))
        emit(row, args.out)


if __name__ == "__main__":
    main()
