"""A step's work counted, not timed: FLOPs, bytes moved and operator calls of one CFG-batched UNet step
(direct, FreeScale, fast mode) at the real models' sizes, on torch's meta device: the real architecture's
shapes and every operator it would run, with no arithmetic done and no weights, so any machine counts it.

Operator calls are what a GPU step of small kernels is bound by (each one host time and a kernel launch):
the H200's FreeScale step at 2048^2 costs 1.61x direct for 1.26x the FLOPs. One JSON line per (size, mode).
    python bench/step_counts.py --unet sdxl --sizes 2048,4096,8192
    python bench/step_counts.py --unet sd15 --sizes 1024 --frames 16     # an AnimateDiff motion UNet
    python bench/step_counts.py --unet tiny --sizes 256 --device cpu      # the built-in model, computed
"""

from __future__ import annotations

import argparse
import contextlib

import torch
import torch.nn.functional as F
from sdxl_step import DTYPES, emit  # bench/ is on the path of a script run from it
from video_step import build_motion_unet, one_step, unet_kwargs
from work_counts import CPU_ATTENTION_FLOPS, BytesMovedMode

MODES = ("direct", "freescale", "fast")


def build_image_unet(name: str, device: str, dtype: torch.dtype):
    """(UNet, native size, family) of SD1.5's or SDXL's architecture (random weights), or the built-in
    model's UNet."""
    from diffusers import UNet2DConditionModel

    if name.startswith("tiny"):
        from freescale.models.loading import load_model, resolve_model_source

        loaded = load_model(resolve_model_source(name), device=device, dtype="fp32")
        return loaded.pipe.unet.to(dtype), loaded.native_size, loaded.family.name
    if name == "sd15":
        from freescale.models.sd15_unet import SD15_NATIVE_SIZE as native
        from freescale.models.sd15_unet import SD15_UNET_CONFIG as config
    else:
        from freescale.models.sdxl_unet import SDXL_NATIVE_SIZE as native
        from freescale.models.sdxl_unet import SDXL_UNET_CONFIG as config
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(**config)
    return unet.to(dtype).eval(), native, name


def _fused_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
    """Attention on the meta device as the fused kernel a GPU runs: one operator that reads q, k, v and
    writes the output (no score matrix), laid out (B, T, heads, D) as flash attention writes it."""
    if attn_mask is not None:  # no attention in the counted UNets takes one; its reads would be missed here
        raise NotImplementedError("step_counts: attention with a mask is not counted")
    attend = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    out = attend(query, key, value, dropout_p, is_causal, scale=scale)[0]
    b, h, t, d = out.shape
    return out.new_empty((b, t, h, d)).transpose(1, 2)


@contextlib.contextmanager
def fused_attention_on_meta(device: torch.device):
    """Meta tensors would take the math path (the whole score matrix); CPU and CUDA take fused kernels."""
    if device.type != "meta":
        yield
        return
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _fused_attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def count(unet, native: int, family: str, size: int, frames: int, mode: str) -> tuple[dict, dict[str, int]]:
    """FLOPs, bytes moved and operator calls of one step in `mode`, and the bytes moved by operator name."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = 2  # the CFG batch
    kwargs = unet_kwargs(unet, batch, max(frames, 1), native)
    shape = (batch, 4, frames, size // 8, size // 8) if frames else (batch, 4, size // 8, size // 8)
    latent = torch.zeros(shape, device=unet.device, dtype=unet.dtype)
    # no_grad, not inference_mode: under inference_mode a dispatch mode sees composite operators (reshape,
    # tensordot) whole and would miss the copies inside them.
    with torch.no_grad(), fused_attention_on_meta(unet.device):
        with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as flops:
            one_step(unet, native, family, kwargs, latent, mode)
        with BytesMovedMode() as moved:
            one_step(unet, native, family, kwargs, latent, mode)
    counts = {"flops": flops.get_total_flops(), "bytes_moved": moved.bytes, "operators": moved.operators}
    return counts, moved.bytes_by_operator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unet", choices=("sdxl", "sd15", "tiny", "tiny-sd15"), default="sdxl")
    parser.add_argument("--sizes", default="2048,4096,8192")
    parser.add_argument("--frames", type=int, default=0, help="0: the image UNet; F: a motion UNet, F frames")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--device", default="meta", help="meta: counted without computing (any machine)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float16")
    parser.add_argument(
        "--by-operator", type=int, default=8, help="operators adding the most bytes, in the JSON"
    )
    parser.add_argument("--out", help="also append the JSON lines to this file")
    args = parser.parse_args()
    dtype = DTYPES[args.dtype]
    if args.frames:
        unet, native, family = build_motion_unet(args.unet, args.device, dtype)
    else:
        unet, native, family = build_image_unet(args.unet, args.device, dtype)
    header = {"bench": "step_counts", "unet": args.unet, "frames": args.frames, "device": args.device,
              "dtype": args.dtype, "torch": torch.__version__}  # fmt: skip
    print("size   mode        TFLOP (x direct)    GB moved (x direct)   operators (x direct)")
    for size in (int(s) for s in args.sizes.split(",")):
        direct = None
        for mode in args.modes.split(","):  # the first is the baseline (direct by default)
            counts, by_operator = count(unet, native, family, size, args.frames, mode)
            if direct is None:
                direct, direct_by_operator = counts, by_operator
            ratios = {f"{k}_vs_direct": round(v / direct[k], 3) for k, v in counts.items()}
            extra = {k: v - direct_by_operator.get(k, 0) for k, v in by_operator.items()}
            largest = dict(sorted(extra.items(), key=lambda kv: -kv[1])[: args.by_operator])
            row = {**header, "size": size, "mode": mode, **counts, **ratios}
            emit({**row, "bytes_above_direct_by_operator": largest if counts is not direct else {}}, args.out)
            print(f"{size:<6} {mode:<11} {counts['flops'] / 1e12:8.2f} ({ratios['flops_vs_direct']:.3f}x)"
                  f"   {counts['bytes_moved'] / 1e9:8.1f} ({ratios['bytes_moved_vs_direct']:.3f}x)"
                  f"   {counts['operators']:8d} ({ratios['operators_vs_direct']:.3f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
