"""Each sharded operator on 2 gloo ranks against the same operator on the whole plane, in one dtype: the
largest difference relative to the largest value, per operator and case (0: bit-exact). Shows which
operators a half-precision sharded render's differences from one rank come from. JSON lines.
Usage: python bench/sharded_ops_dtype.py [--dtype float16] [--ranks 2] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch
from sdxl_step import emit

LATENT = (44, 20)  # 11 four-row units: unequal bands at every level


def _relative(got: torch.Tensor, expected: torch.Tensor) -> float:
    got, expected = got.double(), expected.double()
    return float((got - expected).abs().max() / expected.abs().max().clamp(min=1e-30))


def operator_errors(group, dtype_name: str, device: str) -> dict[str, list[float]]:
    from diffusers.models.attention_processor import Attention
    from torch import nn

    from freescale.cluster.sharding.band_ops import BandConv2d, BandGroupNorm
    from freescale.cluster.sharding.shard_context import ShardContext
    from freescale.cluster.sharding.shard_group import ShardGroup
    from freescale.method.gaussian_blur import gaussian_blur
    from freescale.method.scale_attention import FusionStep, ScaleFusionProcessor

    dtype = getattr(torch, dtype_name)
    sharded, single = ShardContext(group=group), ShardContext(group=ShardGroup.single())
    for context in (sharded, single):
        context.set_stage(LATENT)

    def band(full: torch.Tensor, factor: int, dim: int) -> torch.Tensor:
        a, b = sharded.bands_at(factor)[group.rank]
        return full.narrow(dim, a, b - a)

    def plane(seed: int, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(device, dtype)

    errors: dict[str, list[float]] = {"conv": [], "group_norm": [], "blur": [], "scale_attention": []}
    with torch.inference_mode():
        for dilation, factor in ((1, 1), (2, 2), (3, 1)):
            torch.manual_seed(dilation)
            conv = nn.Conv2d(16, 16, 3, padding=dilation, dilation=dilation).to(device, dtype)
            full = plane(dilation, 2, 16, *sharded.grid_at(factor))
            got = BandConv2d(conv, sharded)(band(full, factor, 2))
            errors["conv"].append(_relative(got, band(conv(full), factor, 2)))
        for factor in (1, 2, 4):
            torch.manual_seed(factor)
            norm = nn.GroupNorm(4, 16).to(device, dtype)
            full = plane(10 + factor, 2, 16, *sharded.grid_at(factor)) * 3 + 5
            got = BandGroupNorm(norm, sharded)(band(full, factor, 2))
            errors["group_norm"].append(_relative(got, band(norm(full), factor, 2)))
        for kernel in (3, 5):
            full = plane(20 + kernel, 2, *sharded.grid_at(1), 16)
            (a, b), reach = sharded.bands_at(1)[group.rank], kernel // 2
            lo, hi = max(a - reach, 0), min(b + reach, LATENT[0])
            got = gaussian_blur(full[:, lo:hi], kernel)[:, a - lo : b - lo]
            errors["blur"].append(_relative(got, gaussian_blur(full, kernel)[:, a:b]))
        for counts, factor, jitter in (((2, 2), 1, 5), ((3, 3), 2, 7), ((2, 1), 4, 3)):
            torch.manual_seed(3)
            attn = Attention(query_dim=16, heads=2, dim_head=8, out_bias=True).to(device, dtype).eval()
            h, w = sharded.grid_at(factor)
            full = plane(30 + factor, 2, h * w, 16)
            a, b = sharded.bands_at(factor)[group.rank]
            outputs = [
                ScaleFusionProcessor(FusionStep(counts, shard=context, jitter_seed=jitter), layer=2)(attn, x)
                for context, x in ((single, full), (sharded, full[:, a * w : b * w]))
            ]
            errors["scale_attention"].append(_relative(outputs[1], outputs[0][:, a * w : b * w]))
    return errors


def main() -> None:
    from freescale.cluster.sharding.local_ranks import run_ranks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float16")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out")
    args = parser.parse_args()
    ranks = run_ranks(args.ranks, operator_errors, args.dtype, args.device)
    for name in ranks[0]:
        worst = [max(r[name][case] for r in ranks) for case in range(len(ranks[0][name]))]
        row = {"bench": "sharded_ops_dtype", "device": args.device, "dtype": args.dtype, "ranks": args.ranks}
        emit({**row, "operator": name, "max_relative_error_per_case": worst}, args.out)


if __name__ == "__main__":
    main()
