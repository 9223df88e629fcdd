"""Temporal consistency of `freescale video` upscales on a clip whose motion is known: a pan moving
PAN_PIXELS_PER_FRAME pixels left per frame (`freescale make-test-clip`), upscaled under several settings.

Each pair of consecutive output frames is compared after undoing the pan (an integer shift of
PAN_PIXELS_PER_FRAME x the scale, only the overlap away from the borders): the mean absolute and RMS
difference, 0-255 levels ("warp error"). The same for the decoded input clip at its own size (the
baseline; its only error is the clip's compression) and for a plain bicubic upscale of it. "flicker": the
mean |frame t+1 - frame t| of co-located pixels, the motion not compensated. Outputs are FFV1 (lossless) so
that compression does not enter the measure. One JSON object on stdout (and in --out).

A setting is NAME (a preset below) or NAME=FLAGS (extra `freescale video` flags, e.g. "fast=--fast-mode");
"unwindowed" needs at most the adapter's positional table of frames (16 for the tiny adapter).
    python bench/temporal_consistency.py                      # tiny model: unwindowed vs windowed
    python bench/temporal_consistency.py --frames 24 --setting windowed --setting "w12=--window 12"
    python bench/temporal_consistency.py --model /models/sd15 --motion-adapter /models/animatediff \\
        --device cuda --size 512x256 --steps 25 --out bench/results/temporal_sd15.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import tempfile
import time

import numpy as np

# Presets: the clip in one motion-module window; in overlapping windows of 8 frames every 4, averaged with
# pyramid (the default) or flat weights.
PRESETS = {"unwindowed": "--window {frames}", "windowed": "--window 8 --window-stride 4",
           "windowed-flat": "--window 8 --window-stride 4 --window-weights flat"}  # fmt: skip
DEFAULT_SETTINGS = ("unwindowed", "windowed")


def levels(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 or uint16 frames as float64 in 0-255 levels."""
    values = frames.astype(np.float64)
    return values / 257.0 if frames.dtype == np.uint16 else values


def pan_pairs(frames: np.ndarray, shift: int, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """(frame t moved by the pan, frame t+1) for every consecutive pair, on the pixels both cover, `margin`
    pixels in from every border. The content moves left: frame t+1 at x shows what frame t has at x+shift."""
    count, height, width = frames.shape[:3]
    if count < 2:
        raise ValueError(f"{count} frame(s): the warp error needs at least 2")
    if shift < 0 or height <= 2 * margin or width <= 2 * margin + shift:
        raise ValueError(f"frames {width}x{height} leave no overlap for shift {shift} and margin {margin}")
    rows = slice(margin, height - margin)
    moved = frames[:-1, rows, margin + shift : width - margin]
    following = frames[1:, rows, margin : width - margin - shift]
    return moved, following


def warp_error(frames: np.ndarray, shift: int, margin: int) -> dict:
    """Mean absolute and RMS difference (0-255 levels) between frame t shifted by the known pan and frame
    t+1, over all pairs; and the mean absolute difference of each pair (a seam between windows shows as a
    peak there)."""
    moved, following = pan_pairs(levels(frames), shift, margin)
    difference = moved - following
    per_pair = np.abs(difference).mean(axis=(1, 2, 3))
    return {
        "warp_mae": float(np.abs(difference).mean()),
        "warp_rms": float(np.sqrt(np.square(difference).mean())),
        "warp_mae_per_pair": [round(float(v), 4) for v in per_pair],
    }


def flicker(frames: np.ndarray, margin: int) -> float:
    """Mean |frame t+1 - frame t| of co-located pixels (motion not compensated), `margin` from the edges."""
    values = levels(frames)
    inner = values[:, margin : values.shape[1] - margin, margin : values.shape[2] - margin]
    return float(np.abs(inner[1:] - inner[:-1]).mean())


def consistency(frames: np.ndarray, shift: int, margin: int) -> dict:
    """The warp error and flicker of one clip, rounded for the report."""
    errors = warp_error(frames, shift, margin)
    changes = flicker(frames, margin)
    return {
        "warp_mae": round(errors["warp_mae"], 4),
        "warp_rms": round(errors["warp_rms"], 4),
        "flicker": round(changes, 4),
        # 0: every change between frames is the pan; about 1: consecutive frames unrelated beyond it
        "warp_to_flicker": ratio(errors["warp_mae"], changes),
        "warp_mae_per_pair": errors["warp_mae_per_pair"],
        "frames": int(frames.shape[0]),
        "size": [int(frames.shape[2]), int(frames.shape[1])],
    }


def ratio(value: float, baseline: float) -> float | None:
    return round(value / baseline, 3) if baseline > 0 else None


def read_frames(path: str) -> np.ndarray:
    from freescale.inputs.video_reader import iter_frames, read_video_info

    return np.stack([frame.pixels for frame in iter_frames(read_video_info(path))])


def bicubic_upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Each frame resized by `scale` with PIL's bicubic filter: what a plain upscale does to the pan."""
    from PIL import Image

    height, width = frames.shape[1:3]
    return np.stack([
        np.asarray(Image.fromarray(frame).resize((width * scale, height * scale), Image.Resampling.BICUBIC))
        for frame in frames
    ])  # fmt: skip


def setting_flags(setting: str, frames: int) -> tuple[str, list[str]]:
    """(name, extra `freescale video` flags) of a NAME or NAME=FLAGS setting."""
    name, separator, flags = setting.partition("=")
    if not separator:
        if name not in PRESETS:
            raise SystemExit(f"--setting {setting!r}: a preset ({', '.join(PRESETS)}) or NAME=FLAGS")
        flags = PRESETS[name].format(frames=frames)
    return name, shlex.split(flags)


def upscale(clip: str, out: str, args: argparse.Namespace, flags: list[str]) -> float:
    """Run `freescale video --input clip` in this process; the seconds it took (model loading included)."""
    from freescale.cli.commands import main

    command = ["video", "--input", clip, "--scale", str(args.scale), "-o", out, "--overwrite", "--quiet"]
    command += ["--workers", "1", "--model", args.model, "--steps", str(args.steps), "--seed", str(args.seed)]
    for flag, value in (("--motion-adapter", args.motion_adapter), ("--device", args.device),
                        ("--dtype", args.dtype), ("--strength", args.strength)):  # fmt: skip
        if value is not None:
            command += [flag, str(value)]
    command += shlex.split(args.render_flags) + flags
    started = time.perf_counter()
    code = main(command)
    if code != 0:
        raise SystemExit(f"freescale {shlex.join(command)} exited with {code}")
    return time.perf_counter() - started


def output_scale(output_width: int, clip_width: int) -> int:
    """The whole factor an output's width is of the clip's: the pan's shift in the output."""
    if output_width % clip_width:
        raise SystemExit(f"output width {output_width} is no whole multiple of the clip's {clip_width}")
    return output_width // clip_width


def device_name(device: str | None) -> str:
    """The device freescale renders on by default (cuda if available), by the name torch reports."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.cuda.get_device_name(device) if device.startswith("cuda") else device


def run(args: argparse.Namespace, directory: str) -> dict:
    from freescale.outputs.video.synthetic_clips import PAN_PIXELS_PER_FRAME, write_pan_clip

    width, height = (int(v) for v in args.size.lower().split("x"))
    clip = os.path.join(directory, "pan.mkv")
    if os.path.exists(clip):  # a --keep directory of an earlier run
        os.remove(clip)
    write_pan_clip(clip, width, height, args.frames, fps=8.0, audio=False)
    source = read_frames(clip)
    margin = args.margin
    baseline = consistency(source, PAN_PIXELS_PER_FRAME, margin)
    bicubic = consistency(bicubic_upscale(source, args.scale), PAN_PIXELS_PER_FRAME * args.scale,
                          margin * args.scale)  # fmt: skip
    # Warm-up (imports, the model, first-call kernels) on a 2-frame clip, so that "seconds" compare settings.
    warm_clip = os.path.join(directory, "warm-up.mkv")
    if not os.path.exists(warm_clip):
        write_pan_clip(warm_clip, width, height, 2, fps=8.0, audio=False)
    upscale(warm_clip, os.path.join(directory, "warm-up-out.mkv"), args, [])
    settings = []
    for setting in args.setting or DEFAULT_SETTINGS:
        name, flags = setting_flags(setting, args.frames)
        out = os.path.join(directory, f"{name}.mkv")
        seconds = upscale(clip, out, args, flags)
        frames = read_frames(out)
        scale = output_scale(frames.shape[2], width)
        measured = consistency(frames, PAN_PIXELS_PER_FRAME * scale, margin * scale)
        settings.append({
            "setting": name, "flags": shlex.join(flags), **measured, "seconds": round(seconds, 1),
            "warp_mae_vs_input": ratio(measured["warp_mae"], baseline["warp_mae"]),
            "warp_mae_vs_bicubic": ratio(measured["warp_mae"], bicubic["warp_mae"]),
        })  # fmt: skip
    return {
        "bench": "temporal_consistency",
        "model": args.model,
        "motion_adapter": args.motion_adapter or "tiny",
        "device": device_name(args.device),
        "steps": args.steps,
        "scale": args.scale,
        "clip": {"size": [width, height], "frames": args.frames, "pan_per_frame": PAN_PIXELS_PER_FRAME},
        "margin": margin,
        "threads": args.threads,
        "input": baseline,
        "bicubic": bicubic,
        "settings": settings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16, help="frames of the pan clip (default: 16)")
    parser.add_argument("--size", default="128x64", help="the clip's WIDTHxHEIGHT (default: 128x64)")
    parser.add_argument("--scale", type=int, default=2, help="output size / clip size (default: 2)")
    parser.add_argument("--setting", action="append", help="NAME or NAME=FLAGS, repeatable "
                        f"(default: {' and '.join(DEFAULT_SETTINGS)}; presets: {PRESETS})")  # fmt: skip
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--motion-adapter", help="(default: freescale's: 'tiny' with a built-in model)")
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--strength", type=float, help="(default: freescale's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--render-flags", default="", help="more `freescale video` flags for every setting")
    parser.add_argument("--margin", type=int, default=8, help="clip pixels left out at each edge (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    parser.add_argument("--keep", help="keep the clip and the upscales in this directory")
    parser.add_argument("--out", help="also write the JSON object to this file")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        result = run(args, args.keep)
    else:
        with tempfile.TemporaryDirectory() as directory:
            result = run(args, directory)
    text = json.dumps(result)
    print(text, flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
