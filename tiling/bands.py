"""Row bands: how a stage's latent rows are split over ranks, and which rows each rank must borrow."""

from __future__ import annotations

Band = tuple[int, int]  # [start, stop) rows


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


def conv_input_rows(out_band: Band, stride: int, padding: int, dilation: int, kernel: int) -> Band:
    """Input rows (possibly outside [0, H): zero padding) that output rows [a, b) of a conv read."""
    a, b = out_band
    if a >= b:
        return (a * stride, a * stride)
    return (a * stride - padding, (b - 1) * stride - padding + dilation * (kernel - 1) + 1)


def clip(band: Band, length: int) -> Band:
    return (max(band[0], 0), min(band[1], length))


def overlap(a: Band, b: Band) -> Band | None:
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if lo < hi else None
