"""The cost of one UNet call on one rank: FLOPs by class and bytes sent by collective kind (pure arithmetic
on a UNetProfile and the bands), and from them, with a device calibration and a link, seconds."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from freescale.planning.cost_calibration import DeviceCalibration, Link
from freescale.planning.fusion_flops import fusion_flops, self_attention_flops
from freescale.planning.shard_traffic import (
    all_gather_bytes,
    all_reduce_bytes,
    blur_needs,
    conv_needs,
    exchange_table,
)
from freescale.planning.unet_profile import SelfAttention, UNetProfile, bilinear
from freescale.tiling.bands import Band, clipped, scale_band
from freescale.tiling.windows import (
    LocalWindows,
    blur_kernel_size,
    jitter_key,
    local_windows,
    windows_touching_rows,
)

MODES = ("direct", "freescale", "fast")
KINDS = ("halo", "all_gather", "all_reduce", "cfg_swap")
_FP32, _COMPLEX64 = 4, 8  # GroupNorm and FreeU reduce fp32 / complex64 partial sums whatever the dtype


@dataclass(frozen=True)
class Jitter:
    """Which jitter draws to reproduce exactly (a measurement's); the plan uses unjittered windows, which
    differ from any one step's by at most window // 8 token rows per window."""

    seed: int
    stage: int
    step: int


@dataclass
class CallCost:
    """One UNet call (one denoising step) on one rank."""

    attention_flops: float = 0.0  # batched matrix products of attention: scores and mixing
    dense_flops: float = 0.0  # convolutions, linear layers, the blur's and FreeU's products
    pixels: int = 0  # latent pixels of the rank's band times the batch: the memory-bound work
    bytes_sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    @property
    def flops(self) -> float:
        return self.attention_flops + self.dense_flops

    def send(self, kind: str, nbytes: int, happened: bool = True, times: int = 1) -> None:
        self.bytes_sent[kind] += nbytes * times
        self.calls[kind] += int(happened) * times

    def compute_seconds(self, device: DeviceCalibration, mode: str) -> float:
        return (
            self.attention_flops / (device.attention_tflops * 1e12)
            + self.dense_flops / (device.dense_tflops * 1e12)
            + self.pixels * device.seconds_per_pixel[mode]
            + device.call_seconds
        )

    def comm_seconds(self, link: Link) -> float:
        """Collectives are not overlapped with compute by the sharded UNet: each one waits."""
        total_bytes = sum(self.bytes_sent.values())
        return total_bytes / (link.gbps * 1e9) + sum(self.calls.values()) * link.latency_us * 1e-6


def level_grid(latent: tuple[int, int], level: int) -> tuple[int, int]:
    return (-(-latent[0] // level), -(-latent[1] // level))


def unet_call_cost(
    profile: UNetProfile,
    latent: tuple[int, int],
    bands: list[Band],
    rank: int,
    *,
    batch: int,
    mode: str,
    counts: tuple[int, int],
    dilate: bool = True,
    freeu: bool = True,
    dtype_bytes: int = 2,
    blur_channels: bool = True,
    jitter: Jitter | None = None,
) -> CallCost:
    """FLOPs and traffic of one UNet call on `rank`, whose latent rows are bands[rank] of `latent`.

    mode "direct" is plain attention (the base stage, one rank); "freescale"/"fast" is scale fusion
    with the restrained dilation on when `dilate`. counts = (n_h, n_w) of the stage.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    world, (a, b), cols = len(bands), bands[rank], latent[1]
    if mode == "direct" and world > 1:
        raise ValueError("direct (plain attention) runs unsharded: the base stage is on one rank")
    cost = CallCost(pixels=batch * (b - a) * cols)
    cost.attention_flops = batch * bilinear(profile.rest_attention, b - a, cols)
    cost.dense_flops = batch * bilinear(profile.rest_dense, b - a, cols)
    if freeu:
        cost.dense_flops += batch * bilinear(profile.freeu_flops, b - a, cols)
    n, all_bands = max(counts), tuple(bands)
    for layer, attn, repeats in _layers(profile, jitter):
        grid = level_grid(latent, attn.level)
        level_bands = level_bands_at(all_bands, attn.level)
        dims = (attn.query_dim, attn.inner_dim, attn.out_dim)
        if mode == "direct":
            flops = self_attention_flops(grid[0] * grid[1], batch, dims)
            cost.attention_flops += repeats * flops[0]
            cost.dense_flops += repeats * flops[1]
            continue
        key = None if jitter is None else jitter_key(jitter.seed, jitter.stage, jitter.step, layer)
        windows = _windows(grid, n, key)
        flops = fusion_flops(
            grid, level_bands[rank], windows, counts, mode == "fast", blur_channels, batch, dims
        )
        cost.attention_flops += repeats * flops[0]
        cost.dense_flops += repeats * flops[1]
        if world > 1:
            # The local windows' borrowed rows, the key/value gather and the blur's halo rows.
            (h, w), (query_dim, inner, out_dim) = grid, dims
            sent, active = _window_table(windows, level_bands)
            cost.send("halo", sent[rank] * batch * w * query_dim * dtype_bytes, active[rank], repeats)
            kv_row = 2 * batch * w * inner * dtype_bytes
            cost.send("all_gather", _gathered_rows(level_bands) * kv_row, times=repeats)
            sent, active = _blur_table(level_bands, h, blur_kernel_size(n))
            cost.send("halo", sent[rank] * batch * w * out_dim * dtype_bytes, active[rank], repeats)
    if world > 1:
        for conv, repeats in profile.conv_groups:
            rows, cols = level_grid(latent, conv.level)
            # The dilation switch sets dilation = padding = n_h on the rows of the listed convs.
            dilation, padding = (counts[0], counts[0]) if conv.dilated and dilate else (1, conv.padding)
            shape = (conv.stride, padding, dilation, conv.kernel)
            sent, active = _conv_table(level_bands_at(all_bands, conv.level), rows, shape)
            cost.send(
                "halo", sent[rank] * batch * conv.in_channels * cols * dtype_bytes, active[rank], repeats
            )
        for groups in profile.group_norms:  # sums and count, then squared deviations
            cost.send("all_reduce", all_reduce_bytes((batch * groups + 1) * _FP32, world))
            cost.send("all_reduce", all_reduce_bytes(batch * groups * _FP32, world))
        if freeu:
            for _, channels in profile.freeu_skips:  # the 2 x 2 low frequencies of every channel
                cost.send("all_reduce", all_reduce_bytes(batch * channels * 4 * _COMPLEX64, world))
    return cost


def _layers(profile: UNetProfile, jitter: Jitter | None) -> list[tuple[int, SelfAttention, int]]:
    """(layer number, layer, how many times it counts): without jitter, layers of one shape at one
    level have the same windows and so the same cost, so each shape is evaluated once."""
    if jitter is not None:
        return [(i, attn, 1) for i, attn in enumerate(profile.self_attention)]
    return [(-1, attn, repeats) for attn, repeats in profile.attention_groups]


# The geometry below is the same for every rank of a stage: computed once per stage, for all ranks.
Table = tuple[list[int], list[bool]]  # rows each rank sends; whether it exchanges anything at all


@lru_cache(maxsize=256)
def level_bands_at(bands: tuple[Band, ...], level: int) -> tuple[Band, ...]:
    """Every rank's band at a level `level` times coarser."""
    return tuple(scale_band(band, level) for band in bands)


@lru_cache(maxsize=256)
def _gathered_rows(bands: tuple[Band, ...]) -> int:
    """Rows a rank sends in all_gather_rows (the same for every rank)."""
    return all_gather_bytes(list(bands), 1)


@lru_cache(maxsize=64)
def _windows(grid: tuple[int, int], n: int, key: int | None) -> LocalWindows:
    return local_windows(grid, n, key)


@lru_cache(maxsize=256)
def _window_table(windows: LocalWindows, bands: tuple[Band, ...]) -> Table:
    """Each rank fetches the rows its local windows cover (inside the grid)."""
    reach = [windows_touching_rows(windows, band).rows for band in bands]
    return exchange_table(list(bands), clipped(reach, windows.grid[0]))


@lru_cache(maxsize=256)
def _blur_table(bands: tuple[Band, ...], rows: int, kernel_size: int) -> Table:
    return exchange_table(list(bands), blur_needs(list(bands), rows, kernel_size))


@lru_cache(maxsize=1024)
def _conv_table(bands: tuple[Band, ...], rows: int, shape: tuple[int, int, int, int]) -> Table:
    """shape = (stride, padding, dilation, kernel) along the rows."""
    return exchange_table(list(bands), conv_needs(list(bands), rows, *shape))
