"""Print sizes to pixels: "24x36in", "61x91.5cm", "420x594mm" or an ISO paper name (A0-A6) at a DPI, and
aspect ratios "W:H"; exact arithmetic (fractions), one rounding rule."""

from __future__ import annotations

import re
from fractions import Fraction

from freescale.errors import ConfigError
from freescale.tiling.stages import Size

DEFAULT_PRINT_DPI = 300  # what --print uses without --dpi: the usual resolution of photographic prints
# Millimetres per unit, exactly (an inch is 25.4 mm by definition).
UNITS = {"in": Fraction(254, 10), "cm": Fraction(10), "mm": Fraction(1)}
# ISO 216 A series, portrait (width, height) in millimetres.
ISO_A_MM = {
    "A0": (841, 1189),
    "A1": (594, 841),
    "A2": (420, 594),
    "A3": (297, 420),
    "A4": (210, 297),
    "A5": (148, 210),
    "A6": (105, 148),
}
_NUMBER = r"(\d+(?:\.\d+)?|\.\d+)"
_PRINT = re.compile(rf"^{_NUMBER}\s*(in|cm|mm)?\s*x\s*{_NUMBER}\s*(in|cm|mm)$")
_ASPECT = re.compile(r"^(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)$")
_ALLOWED_PRINT = "WIDTHxHEIGHT with a unit (24x36in, 61x91.5cm, 420x594mm) or a paper name A0-A6"


def print_millimetres(text: str, landscape: bool = False) -> tuple[Fraction, Fraction]:
    """(width, height) in millimetres of a print size: the given order for WIDTHxHEIGHT with a unit, an
    A size portrait; `landscape` turns either so that the longer side is the width."""
    spec = str(text).strip()
    paper = ISO_A_MM.get(spec.upper())
    if paper is not None:
        width, height = Fraction(paper[0]), Fraction(paper[1])
    else:
        match = _PRINT.match(spec.lower())
        if match is None:
            raise ConfigError(f"--print {text!r} is not a print size; use {_ALLOWED_PRINT}")
        first, first_unit, second, unit = match.groups()
        if first_unit is not None and first_unit != unit:
            raise ConfigError(f"--print {text!r} mixes units {first_unit} and {unit}; give one unit")
        width, height = Fraction(first) * UNITS[unit], Fraction(second) * UNITS[unit]
        if width <= 0 or height <= 0:
            raise ConfigError(f"--print {text!r} has a zero side; both sides must be positive")
    if landscape and height > width:
        width, height = height, width
    return width, height


def millimetres_to_pixels(length: Fraction, dpi: int) -> int:
    """length / 25.4 * dpi rounded to the nearest pixel, halves up (A2 at 300 dpi: 4961 x 7016)."""
    exact = length / UNITS["in"] * dpi
    return int(exact + Fraction(1, 2))  # floor(x + 1/2) of a positive exact value


def print_pixels(text: str, dpi: int, landscape: bool = False, max_side: int | None = None) -> Size:
    """(H, W) pixels of a print size at `dpi` dots per inch; every side at least 1 and at most `max_side`."""
    if isinstance(dpi, bool) or not isinstance(dpi, int) or dpi <= 0:
        raise ConfigError(f"--dpi {dpi!r} must be a positive whole number of dots per inch")
    width, height = print_millimetres(text, landscape)
    pixels = (millimetres_to_pixels(height, dpi), millimetres_to_pixels(width, dpi))
    if min(pixels) < 1:
        raise ConfigError(f"--print {text} at {dpi} dpi is less than one pixel on a side")
    if max_side is not None and max(pixels) > max_side:
        raise ConfigError(
            f"--print {text} at {dpi} dpi is {pixels[1]}x{pixels[0]} px, more than the {max_side} px a side "
            "the renderer supports; use a lower --dpi or a smaller print"
        )
    return pixels


def parse_aspect(text: str) -> Size:
    """'W:H' (whole or decimal numbers, e.g. 2:3, 16:9, 1.85:1) as the smallest whole (a_h, a_w)."""
    match = _ASPECT.match(str(text).strip())
    if match is None:
        raise ConfigError(f"--aspect {text!r} is not an aspect ratio; use WIDTH:HEIGHT such as 2:3 or 16:9")
    width, height = Fraction(match.group(1)), Fraction(match.group(2))
    if width <= 0 or height <= 0:
        raise ConfigError(f"--aspect {text!r} has a zero side; both must be positive, such as 2:3")
    ratio = height / width  # in lowest terms: a_h / a_w
    return (ratio.numerator, ratio.denominator)
