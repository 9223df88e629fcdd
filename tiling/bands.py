"""Row bands: how a stage's latent rows are split over ranks, and which rows each rank must borrow."""

from __future__ import annotations

Band = tuple[int, int]  # [start, stop) rows


def band_align_rows(down_blocks: int) -> int:
    """Latent rows per band unit of a UNet with this many down blocks: it halves the resolution once per
    down block but the last, so bands of whole units split evenly at every level."""
    return 2 ** (down_blocks - 1)


def row_bands(rows: int, ranks: int, align: int = 4) -> list[Band]:
    """Split `rows` into `ranks` contiguous bands of whole `align`-row units, as even as possible.

    Aligning to 4 latent rows makes every band split evenly at the UNet's /2 and /4 levels. Earlier
    ranks get the extra units; a rank may get an empty band only if there are more ranks than units.
    """
    if ranks == 1:
        return [(0, rows)]
    if rows % align:
        raise ValueError(f"{rows} rows are not a whole number of {align}-row units")
    units = rows // align
    base, extra = divmod(units, ranks)
    bands, start = [], 0
    for r in range(ranks):
        size = (base + (1 if r < extra else 0)) * align
        bands.append((start, start + size))
        start += size
    return bands


def scale_band(band: Band, factor: int) -> Band:
    """The band at a level `factor` times coarser; rounding up matches a stride-2 conv's output size
    (bands of several ranks are aligned, so only a lone whole-latent band ever rounds)."""
    return (-(-band[0] // factor), -(-band[1] // factor))


# The halo rules: the rows each rank's band of an operator's output reads, given every rank's input band.
# The band operators fetch exactly these rows and the traffic accounting counts them, from these functions.


def conv_reads(in_bands: list[Band], stride: int, padding: int, dilation: int, kernel: int) -> list[Band]:
    """Rows of a conv's input each rank reads for its output band (its input band // stride: bands are
    aligned); rows outside [0, H) are the conv's zero padding, the rest beyond the band its halo."""
    reads = []
    for a, b in ((a // stride, b // stride) for a, b in in_bands):
        if a >= b:
            reads.append((a * stride, a * stride))  # an empty band reads nothing
        else:
            reads.append((a * stride - padding, (b - 1) * stride - padding + dilation * (kernel - 1) + 1))
    return reads


def blur_reads(bands: list[Band], kernel_size: int) -> list[Band]:
    """Rows a zero-padded blur of `kernel_size` taps reads for each band: kernel_size // 2 either side."""
    halo = kernel_size // 2
    return [(a - halo, b + halo) for a, b in bands]


def clip(band: Band, length: int) -> Band:
    return (max(band[0], 0), min(band[1], length))


def clipped(reads: list[Band], length: int) -> list[Band]:
    """The part of each read inside [0, length): the rows that exist and can be fetched."""
    return [clip(read, length) for read in reads]


def zero_rows(read: Band, length: int) -> tuple[int, int]:
    """Rows of a read above 0 and below `length`: the zero padding (above, below) to add after a fetch."""
    return max(0, -read[0]), max(0, read[1] - length)


def overlap(a: Band, b: Band) -> Band | None:
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if lo < hi else None
