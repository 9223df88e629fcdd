"""Multi-GPU predictions on paper: the cost model's (`freescale plan`'s) times and memory for 8192^2 and
16384^2 SDXL images and a 10-second 4K video upscale on 8 GPUs over NVLink, PCIe and Ethernet, against one
GPU, and what `freescale batch` picks for many such jobs. Loads nothing; prints JSON (one object).

    python bench/multi_gpu_plan.py --out bench/results/multi_gpu_plan_h200.json

Assumptions: H200 fp16 rates fitted to measured SDXL steps (bench/results/h200_sdxl_step_fp16.jsonl), the
link presets of `freescale plan` (effective bandwidth, latency per collective, no overlap of communication
with compute). The video's cost counts every frame's spatial layers, not the motion modules (the cost model
has no motion-module term yet), so it is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from freescale.planning.cost_calibration import LINKS  # noqa: E402
from freescale.planning.frame_split import frame_split  # noqa: E402
from freescale.planning.job_split import job_split  # noqa: E402
from freescale.planning.plan import GIB, make_plan  # noqa: E402
from freescale.tiling.frame_chunks import frame_chunks  # noqa: E402
from freescale.tiling.stages import input_stages, stages_for_target  # noqa: E402

DEVICE = "NVIDIA H200"
GPUS = 8
H200_BYTES = 141 * GIB  # what one H200 holds; a split whose per-GPU peak exceeds it is not taken


def image_case(size: int, link: str) -> dict:
    stages = stages_for_target((size, size), 1024, "double")
    one = make_plan(stages, 1, model="sdxl", device=DEVICE, link=link)
    eight = make_plan(stages, GPUS, model="sdxl", device=DEVICE, link=link)
    batch = job_split([eight] * GPUS, H200_BYTES)  # eight such posters on the eight GPUs
    return {
        "case": f"SDXL {size}x{size}",
        "link": link,
        "stages": [f"{w}x{h}" for h, w in stages],
        "one_gpu_s": round(one.total_s, 1),
        "one_gpu_peak_gib": round(one.peak_bytes / GIB, 1),
        "fits_one_h200": one.peak_bytes <= H200_BYTES,
        "eight_gpus_s": round(eight.total_s, 1),
        "eight_gpus_peak_gib": round(eight.peak_bytes / GIB, 1),
        "speedup": round(one.total_s / eight.total_s, 2),
        "batch_of_8": {
            "groups": batch.groups,
            "workers_each": batch.workers_each,
            "seconds": round(batch.seconds, 1),
            "sharded_seconds": round(batch.sharded_seconds, 1),
        },
    }


def video_case(link: str, fps: int = 24, seconds: int = 10, chunk: int = 64, overlap: int = 8) -> dict:
    """A 1920x1080 clip upscaled 2x to 3840x2160 (SD1.5 + AnimateDiff), in chunks of 64 frames."""
    frames = fps * seconds
    stages = input_stages((1080, 1920), (2160, 3840), "double")
    chunks = len(frame_chunks(frames, chunk, overlap))
    plan = make_plan(stages, GPUS, model="sd15", device=DEVICE, link=link, steps=25, restart=0.3,
                     frames=chunk)  # fmt: skip
    split = frame_split(plan, chunks, memory_bytes=H200_BYTES)
    one = make_plan(stages, 1, model="sd15", device=DEVICE, link=link, steps=25, restart=0.3, frames=chunk)
    return {
        "case": f"10 s 4K video ({frames} frames at {fps} fps, 1080p -> 2160p, SD1.5)", "link": link,
        "stages": [f"{w}x{h}" for h, w in stages], "chunks": chunks,
        "frames_x_bands": [split.groups, split.bands], "eight_gpus_s": round(split.seconds, 1),
        "one_gpu_s": round(chunks * one.total_s, 1), "one_gpu_peak_gib": round(one.peak_bytes / GIB, 1),
        "fits_one_h200": one.peak_bytes <= H200_BYTES,
        "speedup": round(chunks * one.total_s / split.seconds, 2),
        "lower_bound": "motion modules not counted",
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    links = [name for name in ("nvlink", "pcie", "ethernet") if name in LINKS]
    cases = [image_case(size, link) for size in (8192, 16384) for link in links]
    cases += [video_case(link) for link in links]
    result = {"device": DEVICE, "gpus": GPUS, "links": {k: vars(LINKS[k]) for k in links}, "cases": cases}
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    assert all(math.isfinite(c["eight_gpus_s"]) for c in cases)


if __name__ == "__main__":
    main()
