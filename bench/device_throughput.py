"""The device's two ceilings, measured: a large fp16/bf16 matrix product (TFLOP/s) and a device-to-device
copy (GB/s, bytes read plus written). The cost model divides FLOPs and bytes by these. One JSON line.
Usage: python bench/device_throughput.py [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def timed(fn, device: torch.device, repeats: int = 10) -> float:
    """Median seconds of fn() after three warm-ups."""
    for _ in range(3):
        fn()
    seconds = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--matrix", type=int, default=8192)
    parser.add_argument("--copy-gib", type=float, default=4.0)
    args = parser.parse_args()
    device = torch.device(args.device)
    n = args.matrix
    result = {"bench": "device_throughput", "device": torch.cuda.get_device_name(device)
              if device.type == "cuda" else "cpu", "torch": torch.__version__}  # fmt: skip
    generator = torch.Generator(device=device).manual_seed(0)
    for dtype in (torch.float16, torch.bfloat16):
        a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
        b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
        seconds = timed(lambda a=a, b=b: a @ b, device)
        result[f"matmul_tflops_{str(dtype).split('.')[-1]}"] = round(2 * n**3 / seconds / 1e12, 1)
    elements = int(args.copy_gib * 2**30) // 2
    source = torch.randn(elements, device=device, dtype=torch.float16, generator=generator)
    target = torch.empty_like(source)
    seconds = timed(lambda: target.copy_(source), device)
    result["copy_gbps"] = round(2 * source.nbytes / seconds / 1e9, 1)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
