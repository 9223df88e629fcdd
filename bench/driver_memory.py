"""Peak driver memory of writing an 8k output strip by strip vs. from the whole image in memory.

For each format (8- and 16-bit TIFF and PNG, 8-bit TIFF with a pyramid) and path, a fresh process
writes a SIZE x SIZE RGB image and reports the tracemalloc peak (numpy's buffers are traced) and the
growth of ru_maxrss over the write, as one JSON line. "strips": `write_image_strips` fed by a generator
that makes each strip of --strip-rows rows on the fly (768: one SDXL VAE tile row), as the decode does.
"whole": the image assembled in one array, then `save_image`. With --baseline-module FILE, "baseline"
runs FILE's `save_image` on the whole image too (e.g. an earlier image_output.py taken from git, to
compare with what the driver did before). About 8 minutes on 2 busy cores, mostly deflate.
Paths "decode" and "decode-whole" (not run by default: some 10 minutes each at 8k on 2 cores) make the
pixels with the built-in model's VAE on the CPU, strip by strip into `write_image_strips` or as one image
into `save_image`.
Usage: python bench/driver_memory.py [--size 8192] [--strip-rows 768] [--baseline-module FILE]
    [--formats tif8,tif16,tif8-pyramid,png8,png16] [--paths strips,whole,decode,decode-whole]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np

# name: (extension, dtype, pyramid)
FORMATS = {"tif8": (".tif", np.uint8, False), "tif16": (".tif", np.uint16, False),
           "tif8-pyramid": (".tif", np.uint8, True), "png8": (".png", np.uint8, False),
           "png16": (".png", np.uint16, False)}  # fmt: skip


def strips(size: int, rows: int, dtype):
    """A smooth picture with a little noise (compresses like a render, not like pure noise), made a strip
    at a time with in-place arithmetic only, so that making it costs no more than the strip itself."""
    top_value = np.iinfo(dtype).max
    rng = np.random.default_rng(0)
    x = np.linspace(0, top_value * 0.6, size)
    ramp = np.stack([x, x[::-1], np.full(size, top_value * 0.2)], axis=1).astype(dtype)  # (W, 3)
    noise = max(top_value // 64, 1)
    for top in range(0, size, rows):
        n = min(rows, size - top)
        strip = rng.integers(0, noise, (n, size, 3), dtype=dtype)
        strip += ramp
        strip += (np.arange(top, top + n) * (top_value * 0.3 / size)).astype(dtype)[:, None, None]
        yield strip
        del strip  # as the decode's pixel_strips does: a strip is dropped before the next is made


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def run_case(fmt: str, path_kind: str, size: int, rows: int, baseline_module: str | None) -> dict:
    from freescale.outputs.image_output import OutputOptions, save_image
    from freescale.outputs.streaming_output import write_image_strips

    ext, dtype, pyramid = FORMATS[fmt]
    recipe = {"bench": "driver_memory"}
    options = OutputOptions(dpi=300, pyramid=pyramid)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as directory:
        # Warm up imports, the ICC profile and the thread pool outside the measurement.
        write_image_strips([np.zeros((8, 8, 3), dtype)], (8, 8), dtype, os.path.join(directory, "w" + ext))
        make_pixels = _decoder(size, dtype, path_kind) if path_kind.startswith("decode") else None
        path = os.path.join(directory, "out" + ext)
        rss_before = max_rss_bytes()
        tracemalloc.start()
        start = time.perf_counter()
        if path_kind == "strips":
            pixel_rows = strips(size, rows, dtype)
            write_image_strips(pixel_rows, (size, size), dtype, path, recipe=recipe, options=options)
        elif path_kind == "decode":
            write_image_strips(make_pixels(), (size, size), dtype, path, recipe=recipe, options=options)
        elif path_kind == "decode-whole":
            save_image(make_pixels(), path, recipe=recipe, options=options)
        else:
            pixels = np.empty((size, size, 3), dtype)
            top = 0
            for strip in strips(size, rows, dtype):
                pixels[top : top + len(strip)] = strip
                top += len(strip)
            del strip
            save = save_image if path_kind == "whole" else _load(baseline_module).save_image
            save(pixels, path, recipe=recipe, options=options)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        file_bytes = os.path.getsize(path)
    image_bytes = size * size * 3 * np.dtype(dtype).itemsize
    return {
        "format": fmt, "path": path_kind, "size": size, "strip_rows": rows if path_kind == "strips" else None,
        "image_mib": round(image_bytes / 2**20, 1), "tracemalloc_peak_mib": round(peak / 2**20, 1),
        "maxrss_growth_mib": round((max_rss_bytes() - rss_before) / 2**20, 1),
        "peak_over_image": round(peak / image_bytes, 3), "seconds": round(seconds, 1),
        "file_mib": round(file_bytes / 2**20, 1), "cpus": os.cpu_count(),
    }  # fmt: skip


def _decoder(size: int, dtype, path_kind: str):
    """The built-in model's VAE on the CPU decoding random latents of a SIZE px stage (the stage's latents
    are in memory, as on the driver): as pixel strips ("decode"), or as one image ("decode-whole").
    torch's CPU buffers are not traced by tracemalloc: read maxrss_growth_mib for these."""
    import torch

    from freescale.method.vae_transitions import decode_band, pixel_strips, to_pixels
    from freescale.models.tiny_sdxl import _vae

    torch.manual_seed(0)
    vae = _vae().eval()
    latents = torch.randn(1, 4, size // 8, size // 8)
    bit_depth = 8 * np.dtype(dtype).itemsize
    list(pixel_strips(vae, latents[..., :24, :24], (0, 192), bit_depth))  # warm up torch's kernels
    if path_kind == "decode":
        return lambda: pixel_strips(vae, latents, (0, size), bit_depth)
    return lambda: to_pixels(decode_band(vae, latents, (0, size)), bit_depth)


def _load(path: str):
    spec = importlib.util.spec_from_file_location("baseline_image_output", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--strip-rows", type=int, default=768)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--paths", default="strips,whole")
    parser.add_argument("--baseline-module", help="a file with save_image(pixels, path, ...) to compare")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # fmt,path: run one case in this process
    args = parser.parse_args()
    if args.case:
        fmt, path_kind = args.case.split(",")
        print(json.dumps(run_case(fmt, path_kind, args.size, args.strip_rows, args.baseline_module)))
        return
    paths = args.paths.split(",") + (["baseline"] if args.baseline_module else [])
    for fmt in args.formats.split(","):
        for path_kind in paths:
            # A fresh process per case: ru_maxrss only ever grows.
            command = [sys.executable, __file__, "--case", f"{fmt},{path_kind}", "--size", str(args.size),
                       "--strip-rows", str(args.strip_rows)]  # fmt: skip
            if args.baseline_module:
                command += ["--baseline-module", args.baseline_module]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode:
                print(json.dumps({"format": fmt, "path": path_kind, "error": result.stderr.strip()[-2000:]}))
            else:
                print(result.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
