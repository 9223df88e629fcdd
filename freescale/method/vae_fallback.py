"""A reduced-precision (fp16/bf16) VAE tile whose output holds NaN or Inf is redone with a float32 copy of the
VAE parts it ran, and named in one warning line, so that an overflow never leaves a black tile."""

from __future__ import annotations

import copy
import sys
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

Warn = Callable[[str], None]

_REDUCED = (torch.float16, torch.bfloat16)


def print_warning(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class TileReport:
    """Where a redone tile's warning goes (`warn` gets one line) and which image it names: `stage` is a
    0-based stage index (shown 1-based, as progress shows stages), `frame` a video's frame in its clip."""

    stage: int | None = None
    frame: int | None = None
    warn: Warn = print_warning

    def image(self) -> str:
        name = "the image" if self.stage is None else f"stage {self.stage + 1}"
        return name if self.frame is None else f"{name} frame {self.frame}"

    def of_stage(self, stage: int) -> TileReport:
        return replace(self, stage=stage)

    def of_frame(self, frame: int) -> TileReport:
        return replace(self, frame=frame)


# module -> (its parameters' identity and versions when copied, its float32 copy). Weak keys: a copy lives
# only as long as the model it was made from.
_FP32_COPIES: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]] = weakref.WeakKeyDictionary()


def _weights_key(module: nn.Module) -> tuple:
    # Moving or casting the module (new storage) or changing a weight in place (new version) invalidates
    # the copy.
    return tuple((p.data_ptr(), p.device, p.dtype, p._version) for p in module.parameters())


def fp32_copy(module: nn.Module) -> nn.Module:
    """A float32 copy of `module` on its device, made on first use and kept while the module's weights stay
    as they were (the SDXL decoder's is ~200 MB)."""
    key = _weights_key(module)
    held = _FP32_COPIES.get(module)
    if held is not None and held[0] == key:
        return held[1]
    _FP32_COPIES.pop(module, None)  # free a stale copy before making the new one
    with torch.inference_mode(False), torch.no_grad():
        fresh = copy.deepcopy(module).to(torch.float32).eval().requires_grad_(False)
    _FP32_COPIES[module] = (key, fresh)
    return fresh


def _apply(modules: Sequence[nn.Module], x: Tensor) -> Tensor:
    for module in modules:
        x = module(x)
    return x


@torch.no_grad()
def run_tile(modules: Sequence[nn.Module], x: Tensor, tile: str, report: TileReport) -> Tensor:
    """`modules` applied in turn to one tile `x`. In fp16/bf16, a result holding NaN or Inf is redone with
    float32 copies of the modules on `x` upcast (exact), cast back to x's dtype, saturated to its finite
    range (decoded pixels and moments fit it; anything beyond is clamped to [-1, 1] pixels or [-30, 20]
    logvar later anyway), and reported in one line naming `tile` ("VAE decode tile (rows 0-128, cols
    96-224)") and the report's image. Any other result is returned as it is, so nothing changes when no
    tile overflows."""
    out = _apply(modules, x)
    if out.dtype not in _REDUCED or bool(torch.isfinite(out).all()):
        return out
    dtype, image = str(out.dtype).removeprefix("torch."), report.image()
    redone = _apply([fp32_copy(m) for m in modules], x.float())
    if not bool(torch.isfinite(redone).all()):
        report.warn(f"freescale: warning: {tile} of {image} is not finite in {dtype} nor in float32 "
                    "(its input holds NaN or Inf); left as it is")  # fmt: skip
        return out
    limit = torch.finfo(out.dtype).max
    saturated = bool((redone.abs() > limit).any())
    note = f"; values beyond {dtype}'s range saturated" if saturated else ""
    report.warn(f"freescale: warning: {tile} of {image} overflowed in {dtype}; redone in float32{note}")
    return redone.clamp(-limit, limit).to(out.dtype)
