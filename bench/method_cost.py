"""Cost of one high-resolution UNet step with FreeScale against direct inference at the same size.

Side by side in one process, interleaved, median of repeats: the plain UNet (direct inference),
FreeScale (scale-fusion attention, dilated convs, FreeU) in normal and fast mode. One JSON line per
size. Usage: python bench/method_cost.py [--scales 2,4,8] [--repeats 5] [--threads 2] [--model tiny]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

MODES = ("direct", "freescale", "fast")


def one_step(unet, native: int, cond, latent: torch.Tensor, mode: str) -> float:
    """Seconds for one CFG-batched UNet call in `mode`."""
    from freescale.render_config import FREEU_DEFAULT
    from freescale.scale_fusion import scale_fusion

    size = (latent.shape[-2] * 8, latent.shape[-1] * 8)
    started = time.perf_counter()
    if mode == "direct":
        unet(latent, 500, **cond.unet_kwargs(), return_dict=False)
    else:
        fusion = scale_fusion(
            unet, native, size, fast_mode=mode == "fast", freeu=FREEU_DEFAULT, jitter_seed=0
        )
        with fusion as handle:
            handle.begin_step(1, 10, dilate=True)
            unet(latent, 500, **cond.unet_kwargs(), return_dict=False)
    if latent.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    from freescale.conditioning import encode_conditioning
    from freescale.model_loading import load_model, resolve_model_source
    from freescale.random_draws import keyed_normal

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="2,4", help="sizes as multiples of the native resolution")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(resolve_model_source(args.model))
    unet, native = model.pipe.unet, model.native_size
    cond = encode_conditioning(model.pipe, "a red fox", "blurry", 7.5, (native, native))
    for scale in [int(s) for s in args.scales.split(",")]:
        size = native * scale
        latent = keyed_normal((2, 4, size // 8, size // 8), 0, "bench", dtype=unet.dtype, device=unet.device)
        times: dict[str, list[float]] = {m: [] for m in MODES}
        with torch.inference_mode():
            for mode in MODES:
                one_step(unet, native, cond, latent, mode)  # warm-up
            for _ in range(args.repeats):
                for mode in MODES:
                    times[mode].append(one_step(unet, native, cond, latent, mode))
        median = {m: statistics.median(t) for m, t in times.items()}
        print(json.dumps({
            "bench": "method_cost", "model": args.model, "device": str(unet.device), "dtype": str(unet.dtype),
            "threads": args.threads, "size": size, "native": native,
            "seconds_per_step": {m: round(v, 4) for m, v in median.items()},
            "freescale_vs_direct": round(median["freescale"] / median["direct"], 3),
            "fast_vs_direct": round(median["fast"] / median["direct"], 3),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
