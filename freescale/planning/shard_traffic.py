"""Bytes each rank sends in the sharded UNet's collectives, computed from the bands alone (the same
accounting as cluster.shard_group.CommStats, so a prediction can be checked against a measurement)."""

from __future__ import annotations

from bisect import bisect_right

from freescale.tiling.bands import Band, blur_reads, clipped, conv_reads, overlap


def conv_needs(
    bands: list[Band], full_rows: int, stride: int, padding: int, dilation: int, kernel: int
) -> list[Band]:
    """Input rows each rank's band of a conv's output fetches (BandConv2d's halo rule, inside the input)."""
    return clipped(conv_reads(bands, stride, padding, dilation, kernel), full_rows)


def blur_needs(bands: list[Band], full_rows: int, kernel_size: int) -> list[Band]:
    """Rows each rank fetches to blur its band with a `kernel_size`-tap Gaussian (scale fusion's G)."""
    return clipped(blur_reads(bands, kernel_size), full_rows)


def all_gather_bytes(bands: list[Band], row_bytes: int) -> int:
    """Bytes a rank sends in all_gather_rows: its band padded to the longest, to every other rank."""
    longest = max(b - a for a, b in bands)
    return (len(bands) - 1) * longest * row_bytes


def all_reduce_bytes(nbytes: int, world: int) -> int:
    """A ring all-reduce sends 2 (N - 1) / N of the tensor from every rank."""
    return 2 * (world - 1) * nbytes // world if world > 1 else 0


def exchange_table(bands: list[Band], needs: list[Band]) -> tuple[list[int], list[bool]]:
    """For every rank at once: rows it sends in that fetch_rows, and whether it sends or receives at all.
    Each request visits only the bands it reaches (bands are sorted and contiguous)."""
    starts = [a for a, _ in bands]
    sent = [0] * len(bands)
    active = [False] * len(bands)
    for other, need in enumerate(needs):
        if need[0] >= need[1]:
            continue
        for rank in range(max(bisect_right(starts, need[0]) - 1, 0), len(bands)):
            if bands[rank][0] >= need[1]:
                break
            part = overlap(bands[rank], need)
            if rank != other and part is not None:
                sent[rank] += part[1] - part[0]
                active[rank] = active[other] = True
    return sent, active
