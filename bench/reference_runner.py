"""The reference FreeScale code's side of bench/reference_side_by_side.py, run by the reference's venv.

It imports the reference's modules from --reference-dir (never from this repository) and times, with the
driver's weights and inputs, one high-resolution CFG step of its UNet (scale_forward on every transformer
block, its dilated convs) and a whole cascade through its pipeline. It prints one JSON object; nothing
of the reference is copied here, only called.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time

import torch
from safetensors.torch import load_file, save_file
from sdxl_step import synchronize  # bench/ is on the path of a script run from it

# SPEC 5: the convs the reference dilates in every stage above the base (its pipeline lists the same names).
DILATED_CONVS = (
    "down_blocks.1.downsamplers.0.conv",
    "down_blocks.2.resnets.0.conv1", "down_blocks.2.resnets.0.conv2",
    "down_blocks.2.resnets.1.conv1", "down_blocks.2.resnets.1.conv2",
    "mid_block.resnets.0.conv1", "mid_block.resnets.0.conv2",
    "mid_block.resnets.1.conv1", "mid_block.resnets.1.conv2",
)  # fmt: skip


@contextlib.contextmanager
def jitter_off() -> None:
    """The reference jitters its windows with Python's global `random`; a zero draw is no jitter."""
    original = random.randint
    random.randint = lambda a, b: 0
    try:
        yield
    finally:
        random.randint = original


@contextlib.contextmanager
def half_is_identity() -> None:
    """The reference casts the re-encoded latents with `.half()` (it only runs fp16 on CUDA); in an fp32
    CPU run that cast is made the identity so the cascade stays in the dtype both sides run in."""
    original = torch.Tensor.half
    torch.Tensor.half = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.half = original


def scale_attention_on(unet, size: tuple[int, int], fast_mode: bool) -> None:
    from diffusers.models.attention import BasicTransformerBlock
    from scale_attention import scale_forward

    for module in unet.modules():
        if isinstance(module, BasicTransformerBlock):
            module.forward = scale_forward.__get__(module, BasicTransformerBlock)
            module.current_hw = size
            module.fast_mode = fast_mode


def dilate(unet, n: int) -> None:
    for name, module in unet.named_modules():
        if name in DILATED_CONVS:
            module.dilation = (n, n)
            module.padding = (n, n)


def freeu_on(unet) -> None:
    """The reference's FreeU (its run script's SDXL values); it builds its mask on CUDA."""
    from types import SimpleNamespace

    from free_lunch_utils import register_free_crossattn_upblock2d, register_free_upblock2d

    pipe = SimpleNamespace(unet=unet)  # what the register functions read
    register_free_upblock2d(pipe, b1=1.1, b2=1.2, s1=0.6, s2=0.4)
    register_free_crossattn_upblock2d(pipe, b1=1.1, b2=1.2, s1=0.6, s2=0.4)


def time_step(unet, inputs: dict, size: int, fast_mode: bool, repeats: int, output: str | None) -> dict:
    """Seconds of one CFG-batched UNet call at `size` px (the first call a warm-up when repeats > 1), and the
    peak device memory of the last call on CUDA."""
    scale_attention_on(unet, (size, size), fast_mode)
    dilate(unet, size // 1024)  # the reference's own rule: stage width // 1024
    to = {"device": unet.device, "dtype": unet.dtype}
    kwargs = {
        "encoder_hidden_states": inputs["encoder_hidden_states"].to(**to),
        "added_cond_kwargs": {
            "text_embeds": inputs["text_embeds"].to(**to),
            "time_ids": inputs["time_ids"].to(**to),
        },
        "return_dict": False,
    }
    latent = inputs["latent"].to(**to)
    seconds = []
    with torch.inference_mode(), jitter_off():
        for _ in range(repeats):
            if unet.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(unet.device)
            synchronize(unet.device)
            started = time.perf_counter()
            out = unet(latent, 500, **kwargs)[0]
            synchronize(unet.device)
            seconds.append(time.perf_counter() - started)
    if output:
        save_file({"noise_pred": out.float().cpu().contiguous()}, output)
    peak = torch.cuda.max_memory_allocated(unet.device) / 2**30 if unet.device.type == "cuda" else None
    return {"seconds": seconds[1:] if repeats > 1 else seconds, "peak_memory_gib": peak}


def time_render(
    model_dir: str,
    inputs: dict,
    stages: list[int],
    steps: int,
    guidance: float,
    device: str,
    dtype: torch.dtype,
    freeu: bool,
) -> dict:
    """Seconds of the reference pipeline's whole cascade (base stage, then every upper stage), and its peak
    device memory on CUDA."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from pipeline_freescale import StableDiffusionXLPipeline
    from transformers import CLIPTextModelWithProjection

    def part(cls, name: str):
        return cls.from_pretrained(os.path.join(model_dir, name), torch_dtype=dtype)

    pipe = StableDiffusionXLPipeline(
        vae=part(AutoencoderKL, "vae"),
        text_encoder=None,
        # Only its config is read (the width of the pooled embedding); the prompts come as embeddings.
        text_encoder_2=part(CLIPTextModelWithProjection, "text_encoder_2"),
        tokenizer=None,
        tokenizer_2=None,
        unet=part(UNet2DConditionModel, "unet"),
        scheduler=EulerDiscreteScheduler.from_pretrained(os.path.join(model_dir, "scheduler")),
        add_watermarker=False,
    ).to(device)
    if freeu:
        freeu_on(pipe.unet)
    pipe.set_progress_bar_config(disable=True)
    to = {"device": device, "dtype": dtype}
    embeds, pooled = inputs["encoder_hidden_states"].to(**to), inputs["text_embeds"].to(**to)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(torch.device(device))
    started = time.perf_counter()
    # In fp16 its .half() is what the fp16 UNet needs after the upcast VAE's encode: left as it is.
    same_dtype = half_is_identity() if dtype == torch.float32 else contextlib.nullcontext()
    with torch.inference_mode(), same_dtype:
        pipe(
            prompt_embeds=embeds[1:], negative_prompt_embeds=embeds[:1],
            pooled_prompt_embeds=pooled[1:], negative_pooled_prompt_embeds=pooled[:1],
            num_inference_steps=steps, guidance_scale=guidance,
            resolutions_list=[[s, s] for s in stages], cosine_scale=2.0, fast_mode=False,
            generator=torch.Generator().manual_seed(0), output_type="np",
        )  # fmt: skip
    synchronize(torch.device(device))
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    return {"seconds": seconds, "peak_memory_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", required=True)
    parser.add_argument("--model-dir", required=True, help="diffusers layout: unet, vae, scheduler, ...")
    parser.add_argument("--inputs", required=True, help="safetensors: latent and the CFG conditioning")
    parser.add_argument("--task", choices=("step", "render"), required=True)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--fast-mode", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stages", default="1024,2048,3072")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    parser.add_argument("--freeu", action="store_true", help="the reference's FreeU on (CUDA only)")
    parser.add_argument("--step-output", help="write the step's noise prediction here (safetensors)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.freeu and not args.device.startswith("cuda"):
        parser.error("--freeu: the reference's FreeU builds its mask with .cuda(); use --device cuda")
    sys.path.insert(0, os.path.abspath(args.reference_dir))
    inputs = load_file(args.inputs)
    if args.task == "step":
        from diffusers import UNet2DConditionModel

        dtype = getattr(torch, args.dtype)
        unet = UNet2DConditionModel.from_pretrained(os.path.join(args.model_dir, "unet"), torch_dtype=dtype)
        unet = unet.to(args.device).eval()
        if args.freeu:
            freeu_on(unet)
        result = time_step(unet, inputs, args.size, args.fast_mode, args.repeats, args.step_output)
    else:
        stages = [int(s) for s in args.stages.split(",")]
        dtype = getattr(torch, args.dtype)
        result = time_render(
            args.model_dir, inputs, stages, args.steps, args.guidance, args.device, dtype, args.freeu
        )
    import diffusers

    print(json.dumps({**result, "diffusers": diffusers.__version__, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
