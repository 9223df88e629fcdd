"""What the cost model needs to know about a UNet architecture, read once from a meta-device copy of it:
its sharded operators (band convs, GroupNorms, FreeU filters, self-attention layers) and its FLOPs."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import cached_property
from typing import Any

# Fields of a diffusers UNet2DConditionModel config that shape its operators, with the library defaults
# (a config.json may omit fields that newer diffusers versions added; those take these defaults).
SHAPE_FIELDS: dict[str, Any] = {
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "only_cross_attention": False,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "downsample_padding": 1,
    "norm_num_groups": 32,
    "cross_attention_dim": 1280,
    "transformer_layers_per_block": 1,
    "reverse_transformer_layers_per_block": None,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "attention_head_dim": 8,
    "num_attention_heads": None,
    "dual_cross_attention": False,
    "use_linear_projection": False,
    "class_embed_type": None,
    "addition_embed_type": None,
    "addition_time_embed_dim": None,
    "num_class_embeds": None,
    "resnet_time_scale_shift": "default",
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "time_cond_proj_dim": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "projection_class_embeddings_input_dim": None,
    "attention_type": "default",
    "class_embeddings_concat": False,
    "mid_block_only_cross_attention": None,
    "addition_embed_type_num_heads": 64,
}
TEXT_TOKENS = 77  # the text sequence every cross-attention reads (CLIP's context length)


def architecture_key(config: dict[str, Any]) -> str:
    """A short digest of the shape fields of a UNet config (lists and tuples alike, defaults filled in)."""
    fields = {k: config.get(k, default) for k, default in SHAPE_FIELDS.items()}
    text = json.dumps(fields, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Everything but the self-attention layers (whose FLOPs the cost model derives from the FreeScale
# geometry) is counted with FlopCounterMode at four small latent shapes. Those FLOPs are exactly bilinear
# in the latent's rows and columns (every operator works per position, per token or on the fixed text
# sequence, and bands are aligned so every level divides evenly), so four counts give them for any band.
Bilinear = tuple[float, float, float, float]  # c0 + c1 * rows + c2 * cols + c3 * rows * cols, batch 1


def bilinear(c: Bilinear, rows: int, cols: int) -> float:
    return c[0] + c[1] * rows + c[2] * cols + c[3] * rows * cols


@dataclass(frozen=True)
class Conv:
    """A conv the sharded UNet wraps in BandConv2d (kernel or stride > 1), as the band operator sees it."""

    level: int  # 1, 2, 4 ...: its input rows are the latent's rows / level
    in_channels: int
    kernel: int
    stride: int
    padding: int
    dilated: bool  # one of the restrained-dilation convs (SPEC 5)


@dataclass(frozen=True)
class SelfAttention:
    """One attn1 layer: the scale-fusion processor replaces it above the base stage."""

    level: int
    query_dim: int
    inner_dim: int
    out_dim: int


@dataclass(frozen=True)
class UNetProfile:
    key: str
    align: int  # rows of the latent per band unit: 2 ** (number of down-samplers)
    parameters: int
    in_channels: int
    out_channels: int
    base_channels: int  # block_out_channels[0]: activation memory scales with the widths
    convs: tuple[Conv, ...]
    group_norms: tuple[int, ...]  # num_groups of every GroupNorm call, in call order
    freeu_skips: tuple[tuple[int, int], ...]  # (level, skip channels) of every FreeU-filtered skip
    self_attention: tuple[SelfAttention, ...]  # in module order: the jitter's layer numbers
    # FLOPs of one batch row of the UNet without its attn1 layers, by class, bilinear in latent rows/cols.
    rest_attention: Bilinear  # batched matrix products: cross-attention's scores and mixing
    rest_dense: Bilinear  # convolutions and linear layers
    freeu_flops: Bilinear  # FreeU's Fourier sums of one batch row (with FreeU on)

    @cached_property
    def conv_groups(self) -> list[tuple[Conv, int]]:
        """Each distinct band conv and how many the network has (they cost the same)."""
        return list(Counter(self.convs).items())

    @cached_property
    def attention_groups(self) -> list[tuple[SelfAttention, int]]:
        """Each distinct self-attention layer shape and how many the network has."""
        return list(Counter(self.self_attention).items())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UNetProfile:
        return cls(
            key=data["key"],
            align=int(data["align"]),
            parameters=int(data["parameters"]),
            in_channels=int(data["in_channels"]),
            out_channels=int(data["out_channels"]),
            base_channels=int(data["base_channels"]),
            convs=tuple(Conv(**c) for c in data["convs"]),
            group_norms=tuple(int(g) for g in data["group_norms"]),
            freeu_skips=tuple((int(a), int(b)) for a, b in data["freeu_skips"]),
            self_attention=tuple(SelfAttention(**a) for a in data["self_attention"]),
            rest_attention=tuple(data["rest_attention"]),
            rest_dense=tuple(data["rest_dense"]),
            freeu_flops=tuple(data["freeu_flops"]),
        )


class _NullSelfAttention:
    """attn1 processor that does no arithmetic and records the layer's shape: its FLOPs are counted apart."""

    def __init__(self, layer: int, latent_pixels: int, found: dict[int, SelfAttention]):
        self.layer = layer
        self.latent_pixels = latent_pixels
        self.found = found

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **_):
        import torch

        batch, tokens, channels = hidden_states.shape
        level = round((self.latent_pixels / tokens) ** 0.5)
        out_dim = attn.to_out[0].out_features
        self.found[self.layer] = SelfAttention(level, channels, attn.to_q.out_features, out_dim)
        return torch.zeros(batch, tokens, out_dim, dtype=hidden_states.dtype, device=hidden_states.device)


def _counted(fn) -> tuple[int, int]:
    """(batched-matmul FLOPs, other FLOPs) of fn() under FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    attention = dense = 0
    for op, flops in counter.get_flop_counts()["Global"].items():
        if "bmm" in str(op) or "attention" in str(op):
            attention += flops
        else:
            dense += flops
    return attention, dense


def _fit(values: dict[tuple[int, int], int]) -> Bilinear:
    """The bilinear function through values at the corners (r1, c1), (r1, c2), (r2, c1), (r2, c2)."""
    (r1, c1), (r2, c2) = min(values), max(values)
    f11, f12, f21, f22 = (Fraction(values[k]) for k in ((r1, c1), (r1, c2), (r2, c1), (r2, c2)))
    c3 = (f22 - f21 - f12 + f11) / ((r2 - r1) * (c2 - c1))
    c1_ = (f21 - f11) / (r2 - r1) - c3 * c1
    c2_ = (f12 - f11) / (c2 - c1) - c3 * r1
    c0 = f11 - c1_ * r1 - c2_ * c1 - c3 * r1 * c1
    return (float(c0), float(c1_), float(c2_), float(c3))


def profile_unet(unet, config: dict[str, Any]) -> UNetProfile:
    """Profile a UNet2DConditionModel built on the meta device (nothing is computed, nothing allocated)."""
    import torch

    from freescale.method.freeu import fourier_filter
    from freescale.method.unet_topology import dilated_convs, freeu_targets, spatial_self_attention
    from freescale.tiling.bands import band_align_rows

    align = band_align_rows(len(unet.down_blocks))
    dtype, device = unet.dtype, unet.device
    modules = [m for _, m in spatial_self_attention(unet)]
    originals = [m.processor for m in modules]
    c = unet.config
    text = torch.zeros(1, TEXT_TOKENS, c.cross_attention_dim, dtype=dtype, device=device)
    cond: dict[str, Any] = {"encoder_hidden_states": text}
    if c.addition_embed_type == "text_time":  # SDXL's pooled text and micro-conditioning
        pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
        cond["added_cond_kwargs"] = {
            "text_embeds": torch.zeros(1, pooled, dtype=dtype, device=device),
            "time_ids": torch.zeros(1, 6, dtype=dtype, device=device),
        }

    def run(rows: int, cols: int, found: dict[int, SelfAttention]) -> tuple[int, int]:
        for layer, module in enumerate(modules):
            module.set_processor(_NullSelfAttention(layer, rows * cols, found))
        sample = torch.zeros(1, c.in_channels, rows, cols, dtype=dtype, device=device)
        return _counted(lambda: unet(sample, 500, **cond, return_dict=False))

    convs: list[Conv] = []
    norms: list[int] = []
    skips: list[tuple[int, int]] = []
    rows0 = 2 * align
    dilated = {id(conv) for _, conv in dilated_convs(unet)}
    hidden_of = {id(resnet): hidden for resnet, hidden, _ in freeu_targets(unet)}

    def record(module, args):
        x = args[0]
        level = rows0 // x.shape[-2]
        if isinstance(module, torch.nn.Conv2d):
            k, s, p = module.kernel_size[0], module.stride[0], module.padding[0]
            convs.append(Conv(level, x.shape[1], k, s, p, id(module) in dilated))
        elif isinstance(module, torch.nn.GroupNorm):
            norms.append(module.num_groups)
        else:
            skips.append((level, x.shape[1] - hidden_of[id(module)]))

    watched = [
        m
        for m in unet.modules()
        if (isinstance(m, torch.nn.Conv2d) and (m.kernel_size[0] > 1 or m.stride[0] > 1))
        or isinstance(m, torch.nn.GroupNorm)
        or id(m) in hidden_of
    ]
    corners = [(r, w) for r in (rows0, 2 * rows0) for w in (rows0, 2 * rows0)]
    found: dict[int, SelfAttention] = {}
    try:
        handles = [m.register_forward_pre_hook(record) for m in watched]
        try:  # the first run also records the sharded operators
            counts = {corners[0]: run(*corners[0], found)}
        finally:
            for handle in handles:
                handle.remove()
        for rows, cols in corners[1:]:
            counts[(rows, cols)] = run(rows, cols, {})
    finally:
        for module, processor in zip(modules, originals, strict=True):
            module.set_processor(processor)
    layers = [found[layer] for layer in sorted(found)]

    def freeu_count(rows: int, cols: int) -> int:
        def apply():
            for level, channels in skips:
                x = torch.zeros(1, channels, rows // level, cols // level, dtype=dtype, device=device)
                fourier_filter(x, 0.5)

        return sum(_counted(apply))

    return UNetProfile(
        key=architecture_key(config),
        align=align,
        parameters=sum(p.numel() for p in unet.parameters()),
        in_channels=int(c.in_channels),
        out_channels=int(c.out_channels),
        base_channels=int(c.block_out_channels[0]),
        convs=tuple(convs),
        group_norms=tuple(norms),
        freeu_skips=tuple(skips),
        self_attention=tuple(layers),
        rest_attention=_fit({k: v[0] for k, v in counts.items()}),
        rest_dense=_fit({k: v[1] for k, v in counts.items()}),
        freeu_flops=_fit({(r, w): freeu_count(r, w) for r, w in corners}),
    )


def build_meta_unet(config: dict[str, Any]):
    """A UNet2DConditionModel of `config` on the meta device, in fp16 (the dtype changes no FLOP count)."""
    import torch
    from diffusers import UNet2DConditionModel

    init = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(init)
    return unet.to(torch.float16).eval()
