"""A whole 3-stage render of the built-in model on a GPU in float32, float16 and bfloat16, against the
same render on the CPU: the GPU and half-precision paths run end to end and stay close. JSON lines.
Usage: python bench/gpu_render_check.py [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from freescale.config.render_config import RenderConfig


def pixels(config: RenderConfig) -> np.ndarray:
    import freescale

    return np.asarray(freescale.render(config)[-1]).astype(np.int16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    base = RenderConfig(
        prompt="a lighthouse on a cliff at dusk", stages=((128, 128), (256, 256), (512, 512)),
        native_size=128, model="tiny", steps=args.steps, seed=3, device="cpu", dtype="fp32",
    )  # fmt: skip
    reference = pixels(base)
    for device, dtype in (("cuda", "fp32"), ("cuda", "fp16"), ("cuda", "bf16")):
        started = time.perf_counter()
        image = pixels(base.replace(device=device, dtype=dtype))
        difference = np.abs(image - reference)
        print(json.dumps({
            "bench": "gpu_render_check", "device": torch.cuda.get_device_name(), "dtype": dtype,
            "seconds": round(time.perf_counter() - started, 2), "size": list(image.shape[:2]),
            "max_pixel_difference_vs_cpu_fp32": int(difference.max()),
            "mean_pixel_difference_vs_cpu_fp32": round(float(difference.mean()), 3),
        }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
