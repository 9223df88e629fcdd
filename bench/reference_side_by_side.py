"""Our FreeScale against the reference implementation (ali-vilab/FreeScale), same weights and settings,
side by side in one run: one high-resolution CFG step, and a whole cascade.

The reference runs in its own venv (diffusers 0.20.x, einops, a matching huggingface_hub), from a
folder outside this repository, through bench/reference_runner.py; none of its code is in ours.
    python bench/reference_side_by_side.py --reference-dir ../reference/freescale_ref \
        --python ../reference/venv/bin/python --threads 2 --out bench/results/cpu_reference_side_by_side.json
Same settings: the built-in tiny SDXL-topology model saved to disk with its UNet config saying native
1024 px (the reference hard-codes 1024), FreeU off in both (the reference keys FreeU on SDXL's 1280/640
widths and builds its mask on CUDA), jitter off in both for the step, whose outputs are compared too.
On a GPU, SDXL's size with random weights (a whole pipeline when a render is timed), FreeU on in both:
    python bench/reference_side_by_side.py --unet sdxl --device cuda --dtype float16 --freeu --size 4096 \
        --stages 1024,2048,4096 --steps 3 --model-cache /tmp/sdxl_size --reference-dir ... --python ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import load_file, save_file
from sdxl_step import synchronize  # bench/ is on the path of a script run from it

NATIVE = 1024  # what the reference's scale_forward and dilation assume for every model
PROMPT = "a lighthouse on a cliff at dusk"
NEGATIVE = "blurry, ugly, duplicate, poorly drawn, deformed, mosaic"


def save_model(directory: str, unet_name: str, device: str, dtype: torch.dtype, whole: bool) -> None:
    """The weights both sides load. tiny: the built-in SDXL pipeline, its UNet's config saying native 1024
    (sample_size only, no weight). sdxl: SDXL's UNet with random weights, and with `whole` (a render) the
    rest of an SDXL-size pipeline (bench/sdxl_size_pipeline.py)."""
    if unet_name == "sdxl":
        if whole:
            from sdxl_size_pipeline import save_sdxl_size_model

            save_sdxl_size_model(directory, device, dtype)
            return
        from freescale.models.sdxl_unet import build_sdxl_unet

        build_sdxl_unet(device, dtype).save_pretrained(
            os.path.join(directory, "unet"), safe_serialization=True
        )
        return
    from freescale.models.loading import save_tiny_model

    save_tiny_model(directory)
    path = os.path.join(directory, "unet", "config.json")
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    config["sample_size"] = NATIVE // 8
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(config, handle)


def load_ours(directory: str, device: str, dtype: torch.dtype):
    """(our UNet, our loaded model, or None for the UNet alone) from the saved weights."""
    if not os.path.exists(os.path.join(directory, "model_index.json")):
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(os.path.join(directory, "unet"), torch_dtype=dtype)
        return unet.to(device).eval(), None
    from freescale.models.loading import load_model, resolve_model_source

    names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
    model = load_model(resolve_model_source(directory), device=device, dtype=names[dtype])
    return model.pipe.unet, model


def save_inputs(unet, model, size: int, path: str) -> dict:
    """One CFG batch at `size` px: the latent and the conditioning, our encoding of the prompts (a whole
    pipeline) or random tensors of SDXL's shapes (the UNet alone); both sides get these, in float32 on the
    CPU."""
    from freescale.method.random_draws import keyed_normal
    from freescale.models.conditioning import encode_conditioning
    from freescale.models.sdxl_unet import random_unet_kwargs

    if model is not None:
        kwargs = encode_conditioning(model.pipe, PROMPT, NEGATIVE, 7.5, (NATIVE, NATIVE)).unet_kwargs()
    else:
        kwargs = random_unet_kwargs(unet, 2, (NATIVE, NATIVE))
    latent = keyed_normal((1, 4, size // 8, size // 8), 0, "bench").repeat(2, 1, 1, 1)
    tensors = {
        "latent": latent,
        "encoder_hidden_states": kwargs["encoder_hidden_states"],
        "text_embeds": kwargs["added_cond_kwargs"]["text_embeds"],
        "time_ids": kwargs["added_cond_kwargs"]["time_ids"],
    }
    tensors = {k: v.float().cpu().contiguous() for k, v in tensors.items()}
    save_file(tensors, path)
    return tensors


def our_step(
    unet, inputs: dict, size: int, repeats: int, freeu: bool
) -> tuple[list, torch.Tensor, float | None]:
    """Seconds of our FreeScale step (warm-up dropped when repeats > 1), its noise prediction, and the last
    call's peak device memory in GiB (CUDA only)."""
    from freescale.config.render_config import FREEU_DEFAULT
    from freescale.method.scale_fusion import scale_fusion

    t = {k: v.to(unet.device, unet.dtype) for k, v in inputs.items()}
    kwargs = {
        "encoder_hidden_states": t["encoder_hidden_states"],
        "added_cond_kwargs": {"text_embeds": t["text_embeds"], "time_ids": t["time_ids"]},
        "return_dict": False,
    }
    cuda = unet.device.type == "cuda"
    seconds = []
    fusion = scale_fusion(
        unet, NATIVE, (size, size), freeu=FREEU_DEFAULT if freeu else None, jitter_seed=None
    )
    with torch.inference_mode(), fusion as handle:
        for _ in range(repeats):
            handle.begin_step(1, 1, dilate=True)
            if cuda:
                torch.cuda.reset_peak_memory_stats(unet.device)
            synchronize(unet.device)
            started = time.perf_counter()
            out = unet(t["latent"], 500, **kwargs)[0]
            synchronize(unet.device)
            seconds.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated(unet.device) / 2**30 if cuda else None
    return (seconds[1:] if repeats > 1 else seconds), out.float().cpu(), peak


def our_render(
    model, directory: str, stages: list[int], steps: int, freeu: bool
) -> tuple[float, float | None]:
    """Seconds of our whole cascade from the loaded model, and its peak device memory in GiB (CUDA only)."""
    from freescale.config.render_config import build_config
    from freescale.rendering.api import render

    values = {
        "model": directory, "prompt": PROMPT, "negative_prompt": NEGATIVE, "steps": steps, "guidance": 7.5,
        "stages": ",".join(str(s) for s in stages), "seed": 0, "output": "/tmp/unused.png",
    }  # fmt: skip
    if not freeu:
        values["freeu"] = "off"  # on: the family's default, the reference's SDXL values
    config = build_config(values, native_size=NATIVE)
    cuda = model.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(model.device)
    synchronize(model.device)
    started = time.perf_counter()
    render(config, model)
    synchronize(model.device)
    seconds = time.perf_counter() - started
    return seconds, (torch.cuda.max_memory_allocated(model.device) / 2**30 if cuda else None)


def reference(args, directory: str, inputs_path: str, task: str, **extra) -> dict:
    command = [
        args.python, os.path.join(os.path.dirname(__file__), "reference_runner.py"),
        "--reference-dir", args.reference_dir, "--model-dir", directory, "--inputs", inputs_path,
        "--task", task, "--threads", str(args.threads), "--device", args.device, "--dtype", args.dtype,
    ] + (["--freeu"] if args.freeu else [])  # fmt: skip
    for key, value in extra.items():
        command += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    env = dict(os.environ)
    if args.reference_site:  # the reference's packages, ahead of (and instead of) ours on its path
        env["PYTHONPATH"] = args.reference_site
    done = subprocess.run(command, capture_output=True, text=True, cwd=args.reference_dir, env=env)
    if done.returncode != 0:
        sys.exit(f"the reference's {task} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def side_by_side_step(args, unet, directory: str, inputs: dict, inputs_path: str, work: str) -> dict:
    """Rounds of our step then the reference's: the median seconds of each, peak memory (CUDA), and how far
    apart the two noise predictions are (jitter off in both, so they must agree to rounding)."""
    ours, theirs = [], []
    reference_out = os.path.join(work, "reference_step.safetensors")
    for _ in range(args.rounds):
        seconds, out, peak = our_step(unet, inputs, args.size, args.repeats, args.freeu)
        ours.append(statistics.median(seconds))
        ref = reference(args, directory, inputs_path, "step", size=args.size, repeats=args.repeats,
                        step_output=reference_out)  # fmt: skip
        theirs.append(statistics.median(ref["seconds"]))
    expected = load_file(reference_out)["noise_pred"]
    return {
        "size": args.size, "ours_s": [round(s, 3) for s in ours],
        "reference_s": [round(s, 3) for s in theirs],
        "ours_vs_reference": round(statistics.median(ours) / statistics.median(theirs), 3),
        "max_abs_diff": float((out - expected).abs().max()), "max_abs_reference": float(expected.abs().max()),
        "ours_peak_memory_gib": peak, "reference_peak_memory_gib": ref["peak_memory_gib"],
        "reference_diffusers": ref["diffusers"],
    }  # fmt: skip


def side_by_side_render(args, model, directory: str, inputs_path: str) -> dict:
    """Rounds of our whole cascade then the reference's: seconds and peak device memory (CUDA) of each."""
    stages = [int(s) for s in args.stages.split(",")]
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(our_render(model, directory, stages, args.steps, args.freeu))
        theirs.append(reference(args, directory, inputs_path, "render", stages=args.stages, steps=args.steps))
    return {
        "stages": stages, "steps": args.steps, "ours_s": [round(s, 2) for s, _ in ours],
        "reference_s": [round(r["seconds"], 2) for r in theirs],
        "ours_vs_reference": round(
            statistics.median(s for s, _ in ours) / statistics.median(r["seconds"] for r in theirs), 3
        ),
        "ours_peak_memory_gib": ours[-1][1], "reference_peak_memory_gib": theirs[-1]["peak_memory_gib"],
        "reference_diffusers": theirs[-1]["diffusers"],
    }  # fmt: skip


def report(result: dict, out: str | None) -> None:
    """Prints the result so far and rewrites --out with it: a part that later runs out of time loses only
    itself."""
    line = json.dumps(result)
    print(line, flush=True)
    if out:
        with open(out, "w", encoding="utf-8") as handle:
            handle.write(line + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", required=True, help="a checkout of ali-vilab/FreeScale")
    parser.add_argument("--python", required=True, help="the reference venv's python")
    parser.add_argument("--size", type=int, default=2048, help="the step's size in px")
    parser.add_argument(
        "--repeats", type=int, default=3, help="step calls per side and round (first: warm-up; 0: no step)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="ours then the reference's, this many times")
    parser.add_argument("--stages", default="1024,2048,3072", help="the whole render's stages")
    parser.add_argument("--steps", type=int, default=4, help="the whole render's steps (0: no render)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--unet", choices=("tiny", "sdxl"), default="tiny",
                        help="sdxl: SDXL's size, random weights (bench/sdxl_size_pipeline.py)")  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    parser.add_argument("--freeu", action="store_true", help="FreeU on in both (the reference's needs CUDA)")
    parser.add_argument(
        "--reference-site", help="PYTHONPATH for the reference (its packages, installed --target)"
    )
    parser.add_argument(
        "--model-cache",
        help="save the weights here, or load them from here if a run with this --unet and --dtype did",
    )
    parser.add_argument("--out", help="write the JSON result here too")
    args = parser.parse_args()
    if not (args.repeats or args.steps):
        parser.error("nothing to measure: --repeats 0 and --steps 0")
    if args.freeu and not args.device.startswith("cuda"):
        parser.error("--freeu: the reference's FreeU builds its mask with .cuda(); use --device cuda")
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    machine = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    result: dict = {
        "bench": "reference_side_by_side", "device": machine, "dtype": args.dtype,
        "model": "tiny-sdxl (native read as 1024)" if args.unet == "tiny"
        else "sdxl-size pipeline, random weights (text encoders: sdxl widths, 2 layers)" if args.steps
        else "sdxl unet, random weights",
        "machine": platform.processor() or platform.machine(), "threads": args.threads,
        "torch": torch.__version__,
        "settings": f"FreeU {'on' if args.freeu else 'off'} in both; step: jitter off in both, dilation on;"
        " render: each side's own jitter draws",
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as work:
        directory = args.model_cache or os.path.join(work, "model")
        whole = args.steps > 0
        if not os.path.exists(os.path.join(directory, "model_index.json" if whole else "unet")):
            save_model(directory, args.unet, args.device, dtype, whole)
        unet, model = load_ours(directory, args.device, dtype)
        inputs_path = os.path.join(work, "inputs.safetensors")
        inputs = save_inputs(unet, model, args.size, inputs_path)
        if args.repeats:
            result["step"] = side_by_side_step(args, unet, directory, inputs, inputs_path, work)
            report(result, args.out)
        if args.steps:
            result["render"] = side_by_side_render(args, model, directory, inputs_path)
            report(result, args.out)


if __name__ == "__main__":
    main()
