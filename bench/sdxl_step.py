"""One high-resolution UNet step of SDXL's architecture (random weights): direct inference against
FreeScale in normal and fast mode, seconds per step and peak device memory, side by side in one process.

The step is the cascade's: a CFG batch of 2 with scale-fusion attention, dilated convs and FreeU.
One JSON line per (size, mode), then a short table. GPU usage:
    python bench/sdxl_step.py --device cuda --dtype float16 --sizes 2048:5,4096:3,8192:1 --out r.jsonl
CPU dry run of the same code: python bench/sdxl_step.py --unet tiny --sizes 512:2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

MODES = ("direct", "freescale", "fast")
# Wall time by default; --clock thread counts this thread's CPU time instead (with --threads 1 that is
# all of the step's arithmetic), which other processes on a shared CPU machine cannot inflate.
CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}
clock = CLOCKS["wall"]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_unet(name: str, device: str, dtype: torch.dtype):
    """(unet, native size): SDXL's architecture, or the built-in tiny model's UNet."""
    if name == "sdxl":
        from freescale.models.sdxl_unet import SDXL_NATIVE_SIZE, build_sdxl_unet

        return build_sdxl_unet(device, dtype), SDXL_NATIVE_SIZE
    from freescale.models.tiny_sdxl import TINY_NATIVE_SIZE, build_tiny_pipeline

    return build_tiny_pipeline().unet.to(device, dtype), TINY_NATIVE_SIZE


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_step(unet, native: int, kwargs: dict, latent: torch.Tensor, mode: str) -> tuple[float, torch.Tensor]:
    """Seconds for one CFG-batched UNet call in `mode`, and its output."""
    from freescale.config.render_config import FREEU_DEFAULT
    from freescale.method.scale_fusion import scale_fusion

    size = (latent.shape[-2] * 8, latent.shape[-1] * 8)
    synchronize(latent.device)
    started = clock()
    if mode == "direct":
        out = unet(latent, 500, **kwargs, return_dict=False)[0]
    else:
        fusion = scale_fusion(
            unet, native, size, fast_mode=mode == "fast", freeu=FREEU_DEFAULT, jitter_seed=0
        )
        with fusion as handle:
            handle.begin_step(1, 10, dilate=True)
            out = unet(latent, 500, **kwargs, return_dict=False)[0]
    synchronize(latent.device)
    return clock() - started, out


def time_modes(step, modes: list[str], repeats: int, device: torch.device) -> list[dict]:
    """`step(mode) -> (seconds, output)` for every mode, interleaved so that slow drifts hit every mode
    alike (the first round a warm-up when repeats > 1): median seconds, the ratio to direct, peak device
    memory (CUDA only) and whether the output was finite, one dict per mode."""
    cuda = device.type == "cuda"
    times: dict[str, list[float]] = {m: [] for m in modes}
    peaks: dict[str, int] = {}
    finite: dict[str, bool] = {}
    with torch.inference_mode():
        if repeats > 1:
            for mode in modes:
                step(mode)  # warm-up: kernels chosen, buffers sized
        for _ in range(max(repeats - 1, 1)):
            for mode in modes:
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                seconds, out = step(mode)
                times[mode].append(seconds)
                finite[mode] = bool(torch.isfinite(out).all())
                if cuda:
                    peaks[mode] = torch.cuda.max_memory_allocated(device)
                del out
    direct = statistics.median(times["direct"]) if "direct" in times else None
    rows = []
    for mode in modes:
        seconds = statistics.median(times[mode])
        rows.append({
            "mode": mode, "seconds_per_step": round(seconds, 4),
            "vs_direct": round(seconds / direct, 3) if direct else None, "timed_runs": len(times[mode]),
            "peak_memory_gib": round(peaks[mode] / 2**30, 2) if mode in peaks else None,
            "output_finite": finite[mode],
        })  # fmt: skip
    return rows


def measure(unet, native: int, size: int, repeats: int, modes: list[str]) -> list[dict]:
    from freescale.method.random_draws import keyed_normal
    from freescale.models.sdxl_unet import random_unet_kwargs

    kwargs = random_unet_kwargs(unet, 2, (native, native))
    latent = keyed_normal((2, 4, size // 8, size // 8), 0, "bench").to(unet.device, unet.dtype)
    rows = time_modes(lambda mode: one_step(unet, native, kwargs, latent, mode), modes, repeats, unet.device)
    return [{"bench": "sdxl_step", "size": size, **row} for row in rows]


def emit(row: dict, out: str | None) -> None:
    """One JSON line on stdout, and appended to `out` when given."""
    line = json.dumps(row)
    print(line, flush=True)
    if out:
        with open(out, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def print_table(rows: list[dict], keys: tuple[str, ...] = ("size",)) -> None:
    """`keys`, then mode, seconds per step, the ratio to direct and peak memory, one line per row."""
    print(
        "\n"
        + " ".join(f"{k:>6}" for k in keys)
        + f" {'mode':>10} {'s/step':>9} {'x direct':>9} {'peak GiB':>9}"
    )
    for r in rows:
        ratio = f"{r['vs_direct']:.3f}" if r["vs_direct"] else "-"
        peak = f"{r['peak_memory_gib']:.2f}" if r["peak_memory_gib"] is not None else "-"
        first = " ".join(f"{r[k]:>6}" for k in keys)
        print(f"{first} {r['mode']:>10} {r['seconds_per_step']:>9.3f} {ratio:>9} {peak:>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unet", choices=("sdxl", "tiny"), default="sdxl")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--sizes", default="2048:5,4096:3", help="SIZE:RUNS,... (RUNS > 1: first is warm-up)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall")
    parser.add_argument("--out", help="also append the JSON lines to this file")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    modes = args.modes.split(",")
    unet, native = build_unet(args.unet, args.device, DTYPES[args.dtype])
    machine = torch.cuda.get_device_name(unet.device) if unet.device.type == "cuda" else "cpu"
    header = {"unet": args.unet, "device": machine, "dtype": args.dtype, "torch": torch.__version__}
    if args.clock != "wall":
        header["clock"] = args.clock
    rows = []
    for item in args.sizes.split(","):
        size, runs = (int(v) for v in item.split(":"))
        for row in measure(unet, native, size, runs, modes):
            rows.append({**row, **header})
            emit(rows[-1], args.out)
    print_table(rows)


if __name__ == "__main__":
    main()
