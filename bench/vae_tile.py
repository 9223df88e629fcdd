"""SDXL's VAE (random weights) on one tile: seconds and peak device memory of a tile decode and a tile
encode, and of a whole tiled decode/encode, for the cost model's stage transitions. One JSON line each.
Usage on a GPU: python bench/vae_tile.py --device cuda --dtypes float32,float16 --out r.jsonl
CPU, the built-in VAE: python bench/vae_tile.py --vae tiny --sizes 512 --threads 1 --clock thread
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

# stabilityai/sdxl-vae config.json, the fields that shape the network.
SDXL_VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "latent_channels": 4,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_vae(name: str, device: str, dtype: torch.dtype):
    from diffusers import AutoencoderKL

    if name == "sdxl":
        with torch.device(device):
            vae = AutoencoderKL(**SDXL_VAE_CONFIG)
    else:
        from freescale.models.tiny_sdxl import build_tiny_pipeline

        vae = build_tiny_pipeline().vae
    return vae.to(device, dtype).eval()


CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}  # thread: CPU time, with --threads 1
clock = CLOCKS["wall"]


def timed(fn, device: torch.device, repeats: int) -> tuple[float, int]:
    """Median seconds of fn() (after one warm-up) and the peak bytes allocated above the starting point."""
    cuda = device.type == "cuda"
    fn()
    seconds = []
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device) if cuda else 0
    for _ in range(repeats):
        began = clock()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        seconds.append(clock() - began)
    peak = torch.cuda.max_memory_allocated(device) - start if cuda else 0
    return statistics.median(seconds), peak


def measure(vae, head: dict, device: torch.device, sizes: list[int], repeats: int) -> list[dict]:
    """One tile's decode and encode, then whole tiled decodes and encodes at `sizes` pixels."""
    tile, latent_tile = vae.tile_sample_min_size, vae.tile_latent_min_size
    lines = []
    z = torch.randn(1, 4, latent_tile, latent_tile, device=device, dtype=vae.dtype)
    x = torch.randn(1, 3, tile, tile, device=device, dtype=vae.dtype)
    with torch.inference_mode():
        s, peak = timed(lambda: vae.decoder(vae.post_quant_conv(z)), device, repeats)
        lines.append({**head, "op": "decode_tile", "seconds": round(s, 5), "peak_bytes": peak})
        s, peak = timed(lambda: vae.quant_conv(vae.encoder(x)), device, repeats)
        lines.append({**head, "op": "encode_tile", "seconds": round(s, 5), "peak_bytes": peak})
        for size in sizes:
            big_z = torch.randn(1, 4, size // 8, size // 8, device=device, dtype=vae.dtype)
            s, peak = timed(lambda big_z=big_z: vae.decode(big_z).sample, device, 1)
            lines.append(
                {**head, "op": "tiled_decode", "size": size, "seconds": round(s, 4), "peak_bytes": peak}
            )
            big_x = torch.randn(1, 3, size, size, device=device, dtype=vae.dtype)
            s, peak = timed(lambda big_x=big_x: vae.encode(big_x).latent_dist.mean, device, 1)
            lines.append(
                {**head, "op": "tiled_encode", "size": size, "seconds": round(s, 4), "peak_bytes": peak}
            )
            del big_z, big_x
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", choices=("sdxl", "tiny"), default="sdxl")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="float32")
    parser.add_argument("--sizes", default="2048", help="whole tiled decode/encode at these pixel sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="wall")
    parser.add_argument("--out")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    lines = []
    for dtype_name in args.dtypes.split(","):
        vae = build_vae(args.vae, args.device, DTYPES[dtype_name])
        vae.enable_tiling()
        head = {"bench": "vae_tile", "vae": args.vae, "device": name, "dtype": dtype_name}
        head["tile"] = vae.tile_sample_min_size
        if args.clock != "wall":
            head["clock"] = args.clock
        head["weights_bytes"] = sum(p.numel() * p.element_size() for p in vae.parameters())
        lines += measure(vae, head, device, [int(v) for v in args.sizes.split(",")], args.repeats)
        del vae
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for line in lines:
        text = json.dumps(line)
        print(text, flush=True)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as handle:
                handle.write(text + "\n")


if __name__ == "__main__":
    main()
