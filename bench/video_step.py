"""One high-resolution step of an AnimateDiff motion UNet (random weights): direct inference against
FreeScale in normal and fast mode for a clip of F frames, seconds per step and peak device memory, side
by side in one process.

The step is a video cascade's: a CFG batch of 2, frames folded into the batch for the spatial layers,
scale-fusion attention on every frame (one set of windows per step), dilated convs and FreeU; the
motion modules are the model's own. One JSON line per (size, mode), then a short table.
    CPU, built-in models:  python bench/video_step.py --unet tiny-sd15 --sizes 256:3 --frames 16
    GPU, real sizes:       python bench/video_step.py --unet sd15 --device cuda --dtype float16 \
                               --sizes 1024:3 --frames 16 --out r.jsonl
                           python bench/video_step.py --unet sdxl --device cuda --dtype float16 \
                               --sizes 2048:2 --frames 16 --out r.jsonl
"""

from __future__ import annotations

import argparse
import time

import torch
from sdxl_step import DTYPES, emit, print_table, synchronize, time_modes

# "windows": the freescale step with the motion modules attending over temporal windows (--window,
# --window-stride), against the same step unwindowed: what the windows of a long clip cost.
MODES = ("direct", "freescale", "fast", "windows")
# Motion adapters at the real models' sizes: AnimateDiff v1-5-2 (SD1.5) and the SDXL beta adapter.
REAL_ADAPTERS = {
    "sd15": dict(block_out_channels=(320, 640, 1280, 1280), use_motion_mid_block=True),
    "sdxl": dict(block_out_channels=(320, 640, 1280), use_motion_mid_block=False),
}


def build_motion_unet(name: str, device: str, dtype: torch.dtype, seed: int = 0):
    """(motion UNet, native size, family): a built-in tiny model with its tiny adapter, or SD1.5's or
    SDXL's architecture with an AnimateDiff-sized adapter, random weights, nothing downloaded."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.unets.unet_motion_model import MotionAdapter, UNetMotionModel

    if name.startswith("tiny"):
        from freescale.models.loading import load_model, resolve_model_source
        from freescale.models.motion_adapter import build_tiny_motion_adapter, motion_unet

        loaded = load_model(resolve_model_source(name), device=device, dtype="fp32")
        family = loaded.family.name
        unet = motion_unet(loaded, build_tiny_motion_adapter(family, seed))
        return unet.to(device, dtype), loaded.native_size, family
    if name == "sd15":
        from freescale.models.sd15_unet import SD15_NATIVE_SIZE as native
        from freescale.models.sd15_unet import SD15_UNET_CONFIG as config
    else:
        from freescale.models.sdxl_unet import SDXL_NATIVE_SIZE as native
        from freescale.models.sdxl_unet import SDXL_UNET_CONFIG as config
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        image = UNet2DConditionModel(**config)
        adapter = MotionAdapter(motion_layers_per_block=2, motion_max_seq_length=32, **REAL_ADAPTERS[name])
        unet = UNetMotionModel.from_unet2d(image, adapter)
    return unet.to(dtype).eval(), native, name


def unet_kwargs(unet, batch: int, frames: int, native: int) -> dict:
    """Text states (and SDXL's pooled text and micro-conditioning) for a CFG batch, random. The motion UNet
    takes the text states once per frame, (batch * frames, L, D), as diffusers' AnimateDiff pipeline
    gives them; the added conditioning once per clip."""
    if unet.config.addition_embed_type == "text_time":
        from freescale.models.sdxl_unet import random_unet_kwargs

        kwargs = random_unet_kwargs(unet, batch, (native, native))
    else:
        generator = torch.Generator().manual_seed(0)
        states = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=generator)
        kwargs = {"encoder_hidden_states": states.to(unet.device, unet.dtype)}
    kwargs["encoder_hidden_states"] = kwargs["encoder_hidden_states"].repeat_interleave(frames, dim=0)
    return kwargs


def one_step(unet, native: int, family: str, kwargs: dict, latent: torch.Tensor, mode: str, windows=None):
    """Seconds for one CFG-batched motion-UNet call in `mode`, and its output (`windows`: the
    WindowSettings of the "windows" mode)."""
    from freescale.method.scale_fusion import scale_fusion
    from freescale.method.temporal_windows import temporal_windows_applied
    from freescale.models.families import FAMILIES

    if mode == "windows":
        with temporal_windows_applied(unet, windows):
            return one_step(unet, native, family, kwargs, latent, "freescale")

    size = (latent.shape[-2] * 8, latent.shape[-1] * 8)
    synchronize(latent.device)
    started = time.perf_counter()
    if mode == "direct":
        out = unet(latent, 500, **kwargs, return_dict=False)[0]
    else:
        freeu = FAMILIES[family].freeu_default
        with scale_fusion(unet, native, size, fast_mode=mode == "fast", freeu=freeu, jitter_seed=0) as handle:
            handle.begin_step(1, 10, dilate=True)
            out = unet(latent, 500, **kwargs, return_dict=False)[0]
    synchronize(latent.device)
    return time.perf_counter() - started, out


def measure(unet, native: int, family: str, size: int, frames: int, repeats: int, modes: list[str], windows):
    from freescale.method.random_draws import keyed_normal

    kwargs = unet_kwargs(unet, 2, frames, native)
    latent = keyed_normal((2, 4, frames, size // 8, size // 8), 0, "bench").to(unet.device, unet.dtype)

    def step(mode: str):
        return one_step(unet, native, family, kwargs, latent, mode, windows)

    rows = time_modes(step, modes, repeats, unet.device)
    window = {"window": windows.window, "window_stride": windows.stride}
    return [{"bench": "video_step", "size": size, "frames": frames, **window, **row} for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unet", choices=("tiny-sd15", "tiny", "sd15", "sdxl"), default="tiny-sd15")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--sizes", default="256:3", help="SIZE:RUNS,... (RUNS > 1: the first is a warm-up)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--window", type=int, default=8, help="the windows mode's frames per window")
    parser.add_argument("--window-stride", type=int, default=4, help="the windows mode's stride")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--out", help="also append the JSON lines to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from freescale.method.temporal_windows import WindowSettings

    windows = WindowSettings(args.window, args.window_stride, "pyramid")
    unet, native, family = build_motion_unet(args.unet, args.device, DTYPES[args.dtype])
    machine = torch.cuda.get_device_name(unet.device) if unet.device.type == "cuda" else "cpu"
    header = {"unet": args.unet, "device": machine, "dtype": args.dtype, "torch": torch.__version__}
    rows = []
    for item in args.sizes.split(","):
        size, runs = (int(v) for v in item.split(":"))
        for row in measure(unet, native, family, size, args.frames, runs, args.modes.split(","), windows):
            rows.append({**row, **header})
            emit(rows[-1], args.out)
    print_table(rows, ("size", "frames"))


if __name__ == "__main__":
    main()
