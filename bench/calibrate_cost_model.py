"""Regenerate freescale/planning/cost_calibration.json from bench/results: the UNet profiles of the built-in
architectures (FLOPs counted on meta-device UNets), and per device the throughputs and memory
coefficients that make the cost model reproduce the measured steps, fitted by least squares on
relative error. Prints the fit. Usage: python bench/calibrate_cost_model.py [--results bench/results]

The measurements it reads (DEVICES below) come from, on an H200:
    python bench/sdxl_step.py --device cuda --dtype float16 --sizes 2048:4,4096:3,8192:2 --out ...
    python bench/vae_tile.py --device cuda --dtypes float32,float16 --sizes 2048 --out ...
    python bench/band_compute.py --unet sdxl --device cuda --dtype float16 --size 8192 --world 8 --out ...
and on this project's CPU machine (one thread, CPU time: immune to other processes on the machine):
    python bench/sdxl_step.py --unet tiny --sizes 256:4,512:3,1024:2 --threads 1 --clock thread --out ...
    python bench/vae_tile.py --vae tiny --sizes 512 --repeats 5 --threads 1 --clock thread --out ...
    python bench/band_compute.py --unet tiny --size 1024 --world 4 --threads 1 --clock thread --out ...
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "freescale", "planning", "cost_calibration.json")
# device name -> the result files it is calibrated on (bench/sdxl_step.py, bench/vae_tile.py lines)
# ("holdout": measured steps left out of the fit, to report how well the model predicts new sizes)
DEVICES = {
    "NVIDIA H200": {"unet": "sdxl", "steps": ["h200_sdxl_step_fp16.jsonl"], "vae": ["h200_vae_tile.jsonl"],
                    "holdout": ["h200_sdxl_step_fp16_holdout.jsonl"],
                    "bands": ["h200_sdxl_band_compute_fp16.jsonl"]},
    "cpu": {"unet": "tiny", "steps": ["cpu_tiny_step_fp32.jsonl"], "vae": ["cpu_tiny_vae_tile.jsonl"],
            "bands": ["cpu_tiny_band_compute.jsonl"]},
}  # fmt: skip
# ("bands": bench/band_compute.py lines, ranks' bands timed alone: the plan uses them where they match)
BAND_KEYS = ("profile_key", "latent", "world", "rank", "band", "mode", "batch", "dtype_bytes")
# Devices without measurements of their own, matched by a fragment of the name torch reports. The H100
# has the H200's compute (less memory bandwidth, so memory-bound parts run somewhat slower).
ALIASES = {"H200": "NVIDIA H200", "H100": "NVIDIA H200", "NVIDIA": "NVIDIA H200"}
MEMORY_FROM = "NVIDIA H200"  # devices without peak-memory measurements borrow its coefficients
SDXL_TEXT_ENCODERS = [  # CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 text towers, as in SDXL base
    {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
     "projection_dim": 768, "hidden_act": "quick_gelu", "with_projection": False},
    {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20,
     "projection_dim": 1280, "hidden_act": "gelu", "with_projection": True},
]  # fmt: skip
MODES = ("direct", "freescale", "fast")


def read_lines(results: str, names: list[str]) -> list[dict[str, Any]]:
    lines = []
    for name in names:
        path = os.path.join(results, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                lines += [json.loads(line) for line in handle if line.strip()]
    return lines


def builtin_models() -> tuple[dict[str, Any], dict[str, Any]]:
    """(models, unet_profiles) of 'sdxl', 'tiny', 'sd15' and 'tiny-sd15'."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    from vae_tile import SDXL_VAE_CONFIG

    from freescale.models.sdxl_unet import SDXL_UNET_CONFIG
    from freescale.models.tiny_sdxl import TINY_NATIVE_SIZE, build_tiny_pipeline
    from freescale.planning.unet_profile import build_meta_unet, profile_unet

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    text = 0
    for spec in SDXL_TEXT_ENCODERS:
        spec = dict(spec)
        kind = CLIPTextModelWithProjection if spec.pop("with_projection") else CLIPTextModel
        with torch.device("meta"):
            text += count(kind(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, **spec)))
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        sdxl_vae = AutoencoderKL(**SDXL_VAE_CONFIG)
    tiny = build_tiny_pipeline()
    models = {
        "sdxl": {"native_size": 1024, "text_parameters": text, "vae_parameters": count(sdxl_vae),
                 "vae_tile": 1024, "vae_scale": 8, "vae_force_upcast": True},
        "tiny": {"native_size": TINY_NATIVE_SIZE, "text_parameters": count(tiny.text_encoder) +
                 count(tiny.text_encoder_2), "vae_parameters": count(tiny.vae),
                 "vae_tile": tiny.vae.config.sample_size, "vae_scale": 8, "vae_force_upcast": True},
    }  # fmt: skip
    from freescale.models.sd15_unet import (
        SD15_NATIVE_SIZE,
        SD15_TEXT_PARAMETERS,
        SD15_UNET_CONFIG,
        SD15_VAE_PARAMETERS,
    )
    from freescale.models.tiny_sd15 import build_tiny_sd15_pipeline

    tiny_sd15 = build_tiny_sd15_pipeline()
    models["sd15"] = {"native_size": SD15_NATIVE_SIZE, "text_parameters": SD15_TEXT_PARAMETERS,
                      "vae_parameters": SD15_VAE_PARAMETERS, "vae_tile": 512, "vae_scale": 8,
                      "vae_force_upcast": True}  # fmt: skip
    models["tiny-sd15"] = {"native_size": TINY_NATIVE_SIZE, "text_parameters": count(tiny_sd15.text_encoder),
                           "vae_parameters": count(tiny_sd15.vae),
                           "vae_tile": tiny_sd15.vae.config.sample_size, "vae_scale": 8,
                           "vae_force_upcast": True}  # fmt: skip
    profiles = {}
    configs = (("sdxl", dict(SDXL_UNET_CONFIG)), ("tiny", dict(tiny.unet.config)),
               ("sd15", dict(SD15_UNET_CONFIG)), ("tiny-sd15", dict(tiny_sd15.unet.config)))  # fmt: skip
    for name, config in configs:
        profiles[name] = profile_unet(build_meta_unet(config), config).to_json()
    return models, profiles


def step_costs(profile, lines: list[dict[str, Any]], native: int) -> list[tuple[dict, Any]]:
    """Each measured step (bench/sdxl_step.py: batch 2, one rank, jitter seed 0, stage 1, step 10)
    with the cost model's count of it."""
    from freescale.planning.cost_model import Jitter, unet_call_cost

    out = []
    for line in lines:
        latent = line["size"] // 8
        mode = line["mode"]
        cost = unet_call_cost(
            profile, (latent, latent), [(0, latent)], 0, batch=2, mode=mode,
            counts=(line["size"] // native,) * 2, freeu=mode != "direct", jitter=Jitter(0, 1, 10),
        )  # fmt: skip
        out.append((line, cost))
    return out


def fit_time(costs: list[tuple[dict, Any]]) -> dict[str, Any]:
    """Non-negative least squares (by trying every subset of the optional terms) of
    t = A / attention + D / dense + P_fusion * s + c, on relative error."""
    rows, target = [], []
    for line, cost in costs:
        fusion = cost.pixels if line["mode"] != "direct" else 0
        t = line["seconds_per_step"]
        rows.append([cost.attention_flops / 1e12 / t, cost.dense_flops / 1e12 / t, fusion * 1e-6 / t, 1 / t])
        target.append(1.0)
    x, y = np.array(rows), np.array(target)
    best = None
    for extra in itertools.chain.from_iterable(itertools.combinations((2, 3), k) for k in range(3)):
        cols = [0, 1, *extra]
        coef, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
        if (coef <= 0).any():
            continue
        error = float(np.sum((x[:, cols] @ coef - 1) ** 2))
        if best is None or error < best[0]:
            full = np.zeros(4)
            full[cols] = coef
            best = (error, full)
    assert best is not None, "no non-negative fit"
    c = best[1]
    return {
        "attention_tflops": float(f"{1 / c[0]:.4g}"),
        "dense_tflops": float(f"{1 / c[1]:.4g}"),
        "seconds_per_pixel": {
            "direct": 0.0,
            "freescale": float(f"{c[2] * 1e-6:.4g}"),
            "fast": float(f"{c[2] * 1e-6:.4g}"),
        },
        "call_seconds": float(f"{c[3]:.4g}"),
    }


def fit_memory(costs: list[tuple[dict, Any]], weights_bytes: int) -> dict[str, Any] | None:
    """Per mode: peak - weights = pixels x per_pixel + fixed (least squares; through 0 if fixed < 0)."""
    per_pixel, fixed = {}, {}
    for mode in MODES:
        points = [(c.pixels, line["peak_memory_gib"] * 2**30 - weights_bytes)
                  for line, c in costs if line["mode"] == mode and line.get("peak_memory_gib")]  # fmt: skip
        if len(points) < 2:
            return None
        p, m = np.array(points, dtype=float).T
        slope, intercept = np.polyfit(p, m, 1)
        if intercept < 0:
            slope, intercept = float(p @ m / (p @ p)), 0.0
        per_pixel[mode], fixed[mode] = round(float(slope), 2), round(float(intercept))
    return {"activation_bytes_per_pixel": per_pixel, "activation_fixed_bytes": fixed}


def fit_vae(lines: list[dict[str, Any]], dtype: str) -> dict[str, Any] | None:
    by_op = {line["op"]: line for line in lines if line["dtype"] == dtype and "size" not in line}
    if "decode_tile" not in by_op:
        return None
    tile = by_op["decode_tile"]["tile"]
    latent_tile = tile // 8
    return {
        "dtype_bytes": 4 if dtype == "float32" else 2,
        "decode_seconds_per_latent_pixel": by_op["decode_tile"]["seconds"] / latent_tile**2,
        "encode_seconds_per_pixel": by_op["encode_tile"]["seconds"] / tile**2,
        "decode_peak_bytes": by_op["decode_tile"]["peak_bytes"],
        "encode_peak_bytes": by_op["encode_tile"]["peak_bytes"],
        "tile": tile,
    }


def check_vae(vae: dict[str, Any], lines: list[dict[str, Any]], dtype: str) -> list[dict[str, Any]]:
    """Whole tiled decodes and encodes (tiles of every size, blending) against the per-pixel model."""
    from freescale.planning.vae_cost import output_work, transition_work

    checks = []
    for line in lines:
        if line["dtype"] != dtype or "size" not in line:
            continue
        size, tile = line["size"], line["tile"]
        if line["op"] == "tiled_decode":
            pixels = output_work((size, size), (0, size), tile, 8).decode_latent_pixels
            predicted = pixels * vae["decode_seconds_per_latent_pixel"]
        else:
            pixels = transition_work((size, size), (size, size), (0, size // 8), tile, 8).encode_pixels
            predicted = pixels * vae["encode_seconds_per_pixel"]
        checks.append({"op": line["op"], "size": size, "measured_s": line["seconds"],
                       "predicted_s": float(f"{predicted:.4g}")})  # fmt: skip
    return checks


def evaluate(entry: dict[str, Any], costs: list[tuple[dict, Any]], weights_bytes: int) -> list[dict]:
    """Each measurement beside the model's prediction of it (seconds; peak memory with the weights)."""
    points = []
    for line, cost in costs:
        mode = line["mode"]
        predicted = (cost.attention_flops / (entry["attention_tflops"] * 1e12)
                     + cost.dense_flops / (entry["dense_tflops"] * 1e12)
                     + cost.pixels * entry["seconds_per_pixel"][mode] + entry["call_seconds"])  # fmt: skip
        point = {"size": line["size"], "mode": mode, "tflops": float(f"{cost.flops / 1e12:.4g}")}
        point.update(measured_s=line["seconds_per_step"], predicted_s=float(f"{predicted:.4g}"))
        if line.get("peak_memory_gib") and "activation_bytes_per_pixel" in entry:
            peak = (
                cost.pixels * entry["activation_bytes_per_pixel"][mode]
                + entry["activation_fixed_bytes"][mode]
            )
            point["measured_peak_gib"] = line["peak_memory_gib"]
            point["predicted_peak_gib"] = round((peak + weights_bytes) / 2**30, 2)
        points.append(point)
    return points


def calibrate_device(name: str, sources: dict, results: str, models: dict, profiles: dict) -> dict | None:
    from freescale.planning.unet_profile import UNetProfile

    lines = [line for line in read_lines(results, sources["steps"]) if line.get("device") == name]
    if not lines:
        return None
    profile = UNetProfile.from_json(profiles[sources["unet"]])
    dtype_bytes = 4 if lines[0]["dtype"] == "float32" else 2
    costs = step_costs(profile, lines, models[sources["unet"]]["native_size"])
    entry: dict[str, Any] = {"dtype_bytes": dtype_bytes, **fit_time(costs)}
    memory = fit_memory(costs, profile.parameters * dtype_bytes)
    if memory is not None:
        entry.update(memory, activation_base_channels=profile.base_channels)
    vae_lines = [line for line in read_lines(results, sources["vae"]) if line.get("device") == name]
    entry["vae"] = fit_vae(vae_lines, "float32")
    if entry["vae"] is not None:
        entry["vae_checks"] = check_vae(entry["vae"], vae_lines, "float32")
    entry["sources"] = [f"bench/results/{n}" for n in sources["steps"] + sources["vae"]]
    entry["fit"] = evaluate(entry, costs, profile.parameters * dtype_bytes)
    holdout = [line for line in read_lines(results, sources.get("holdout", [])) if line.get("device") == name]
    native = models[sources["unet"]]["native_size"]
    entry["holdout"] = evaluate(entry, step_costs(profile, holdout, native), profile.parameters * dtype_bytes)
    entry["sources"] += [f"bench/results/{n} (holdout)" for n in sources.get("holdout", [])]
    bands = [line for line in read_lines(results, sources.get("bands", [])) if line.get("device") == name]
    entry["band_steps"] = [
        # (FreeU: the bench has always run it; its first lines did not say so)
        {**{k: line[k] for k in BAND_KEYS}, "freeu": line.get("freeu", True),
         "measured_s": line["seconds_per_step"], "predicted_s": line["model_predicted_s"]}
        for line in bands
    ]  # fmt: skip
    entry["sources"] += [f"bench/results/{n} (bands)" for n in sources.get("bands", []) if bands]
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    models, profiles = builtin_models()
    devices = {}
    for name, sources in DEVICES.items():
        entry = calibrate_device(name, sources, args.results, models, profiles)
        if entry is not None:
            devices[name] = entry
    donor = devices[MEMORY_FROM]
    for entry in devices.values():
        if "activation_bytes_per_pixel" not in entry:  # no peak measurements: borrow, scaled by width
            for key in ("activation_bytes_per_pixel", "activation_fixed_bytes", "activation_base_channels"):
                entry[key] = donor[key]
            entry["activation_dtype_bytes"] = donor["dtype_bytes"]
            entry["memory_note"] = f"activation and VAE peaks borrowed from {MEMORY_FROM}"
            if entry["vae"] is not None:
                for key in ("decode_peak_bytes", "encode_peak_bytes", "tile", "dtype_bytes"):
                    entry["vae"][key] = donor["vae"][key]
    data = {
        "about": "Written by bench/calibrate_cost_model.py from bench/results; see README 'freescale plan'.",
        "models": models,
        "unet_profiles": profiles,
        "devices": devices,
        "aliases": ALIASES,
        "default_gpu": MEMORY_FROM,
    }
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
        handle.write("\n")
    for name, entry in devices.items():
        pixel_ns = entry["seconds_per_pixel"]["freescale"] * 1e9
        call_ms = entry["call_seconds"] * 1e3
        print(f"{name}: attention {entry['attention_tflops']} TFLOP/s, dense {entry['dense_tflops']} "
              f"TFLOP/s, fusion {pixel_ns:.1f} ns/pixel, call {call_ms:.2f} ms")  # fmt: skip
        for check in entry.get("vae_checks", []):
            error = check["predicted_s"] / check["measured_s"] - 1
            print(f"  vae {check['op']} {check['size']}: measured {check['measured_s']} s, "
                  f"predicted {check['predicted_s']} s ({error:+.1%})")  # fmt: skip
        for b in entry["band_steps"]:
            error = b["predicted_s"] / b["measured_s"] - 1
            print(f"  band {b['latent'][0] * 8:>5} rank {b['rank']}/{b['world']} {b['mode']:>9}  measured "
                  f"{b['measured_s']:>8.4f} s  model {b['predicted_s']:>8.4f} s  {error:+5.1%}")  # fmt: skip
        for kind in ("fit", "holdout"):
            for f in entry[kind]:
                error = f["predicted_s"] / f["measured_s"] - 1
                times = (
                    f"measured {f['measured_s']:>8.4f} s  predicted {f['predicted_s']:>8.4f} s  {error:+5.1%}"
                )
                memory = ""
                if "predicted_peak_gib" in f:
                    memory = f"  peak {f['measured_peak_gib']:>6.2f} / {f['predicted_peak_gib']:>6.2f} GiB"
                print(f"  {kind:>7} {f['size']:>5} {f['mode']:>9} {f['tflops']:>9.4g} TFLOP  {times}{memory}")


if __name__ == "__main__":
    main()
