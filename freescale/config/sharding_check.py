"""The one check of a render's sharding (workers, --cfg-parallel, row bands per stage), used by render, batch,
plan and the CFG split, and the band geometry it needs, read from the model's configs without loading it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from freescale.errors import ConfigError
from freescale.tiling.bands import band_align_rows
from freescale.tiling.stages import Size

if TYPE_CHECKING:
    from freescale.models.model_source import ModelSource

# The built-in tiny models keep their family's UNet topology at toy widths, and the 8x VAE.
_BUILTIN_VAE_SCALE = 8


@dataclass(frozen=True)
class BandGeometry:
    """How a model's latents split into row bands: every band is a whole number of `align_rows` latent
    rows (2 ** (down blocks - 1), so each UNet level splits evenly), `vae_scale` pixels per latent row."""

    align_rows: int
    vae_scale: int

    @property
    def unit_px(self) -> int:
        return self.align_rows * self.vae_scale


def band_align_from_config(unet_config: dict) -> int:
    """Latent rows per band unit: the UNet halves the resolution once per down block but the last."""
    return band_align_rows(len(unet_config["down_block_types"]))


def band_geometry_of(source: ModelSource) -> BandGeometry:
    """The band geometry of a checked model source, from its unet/vae config.json (built-in models: their
    family's); loads no weights."""
    from freescale.models.families import family_of_source
    from freescale.models.native_resolution import read_component_config, vae_scale_from_config

    if source.kind == "tiny":
        return BandGeometry(band_align_rows(family_of_source(source).down_blocks), _BUILTIN_VAE_SCALE)
    config_dir = source.path if source.kind == "directory" else source.config_dir
    if config_dir is None:
        raise ConfigError(f"model source {source!r} is not valid; build it with resolve_model_source")
    unet, vae = read_component_config(config_dir, "unet"), read_component_config(config_dir, "vae")
    return BandGeometry(band_align_from_config(unet), vae_scale_from_config(vae))


def check_cfg_parallel(workers: int, guidance: float | None = None) -> None:
    """--cfg-parallel splits the guidance batch over two equal groups: an even number of workers, and a
    batch to split (guidance > 1; None where it is not known, as in a worker's CFG split)."""
    if workers % 2:
        raise ConfigError(f"--cfg-parallel needs an even number of workers, got --workers {workers}")
    if guidance is not None and guidance <= 1.0:
        raise ConfigError(f"--cfg-parallel needs --guidance > 1 (got {guidance}): no batch to split")


def check_stage_bands(stages: Sequence[Size], band_align_rows: int, vae_scale: int) -> None:
    """Every stage's height is a whole number of band units (its width of latent pixels)."""
    unit = band_align_rows * vae_scale
    for h, w in stages:
        if h % unit or w % vae_scale:
            raise ConfigError(
                f"stage {w}x{h}: the height must be a multiple of {unit} px to split into bands"
            )


def check_sharding(
    stages: Sequence[Size],
    workers: int,
    cfg_parallel: bool,
    guidance: float,
    band_align_rows: int,
    vae_scale: int,
) -> None:
    """Refuse a sharding the ranks cannot run: every rank of a band group needs at least one band unit
    (`band_align_rows` latent rows of `vae_scale` px) of every upper stage."""
    if workers < 1:
        raise ConfigError(f"--workers {workers} must be at least 1")
    if cfg_parallel:
        check_cfg_parallel(workers, guidance)
    check_stage_bands(stages, band_align_rows, vae_scale)
    groups = 2 if cfg_parallel else 1
    ranks = workers // groups
    unit = band_align_rows * vae_scale
    for h, w in stages[1:]:
        units = h // unit
        if ranks > units:
            raise ConfigError(
                f"--workers {workers}: stage {w}x{h} has only {units} bands of {unit} px rows to share; "
                f"use at most {units * groups} workers"
            )
