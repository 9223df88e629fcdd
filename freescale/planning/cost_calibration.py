"""The cost model's measured constants: per device, effective throughputs and memory coefficients fitted
to bench/results (cost_calibration.json, written by bench/calibrate_cost_model.py); link presets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from freescale.errors import ConfigError
from freescale.planning.unet_profile import UNetProfile

CALIBRATION_FILE = "cost_calibration.json"


@dataclass(frozen=True)
class Link:
    """Effective point-to-point bandwidth and per-collective latency between two workers (assumptions)."""

    name: str
    gbps: float  # GB/s a rank's sends actually move (bus bandwidth of NCCL/gloo, not the wire's peak)
    latency_us: float  # one collective's fixed cost (launch, synchronisation, the network's round trip)


# Effective numbers, not datasheet peaks; override with --link-gbps / --link-latency-us.
LINKS: dict[str, Link] = {
    # NVLink 4 (H100/H200 SXM, 900 GB/s per GPU both ways): NCCL all-gather bus bandwidth ~350 GB/s.
    "nvlink": Link("nvlink", 350.0, 10.0),
    # PCIe 4.0 x16 (32 GB/s per direction on paper), peer-to-peer or through the host: ~22 GB/s.
    "pcie": Link("pcie", 22.0, 20.0),
    # 100 GbE between nodes with NCCL over sockets/RoCE: ~10 GB/s, tens of microseconds per collective.
    "ethernet": Link("ethernet", 10.0, 50.0),
    # gloo over the loopback on one host (the CPU tests): a few GB/s.
    "loopback": Link("loopback", 3.0, 50.0),
}


def link_for(name: str, gbps: float | None = None, latency_us: float | None = None) -> Link:
    """A preset by name, optionally with its bandwidth or latency overridden."""
    if name not in LINKS:
        raise ConfigError(f"--link {name!r} is not one of {', '.join(LINKS)}")
    base = LINKS[name]
    if gbps is not None and gbps <= 0:
        raise ConfigError(f"--link-gbps {gbps} must be > 0")
    if latency_us is not None and latency_us < 0:
        raise ConfigError(f"--link-latency-us {latency_us} must be >= 0")
    return Link(
        name,
        base.gbps if gbps is None else float(gbps),
        base.latency_us if latency_us is None else float(latency_us),
    )


@dataclass(frozen=True)
class VaeCalibration:
    """SDXL-VAE-shaped tile costs, measured: seconds scale with a tile's pixels, peak memory does not."""

    dtype_bytes: int
    decode_seconds_per_latent_pixel: float
    encode_seconds_per_pixel: float
    decode_peak_bytes: int  # working set of one full decoder tile above the weights
    encode_peak_bytes: int
    tile: int  # the tile (sample_size) those numbers were measured at, in pixels


@dataclass(frozen=True)
class DeviceCalibration:
    """time per UNet call = attention FLOPs / attention_tflops + dense FLOPs / dense_tflops
    + batch x band pixels x seconds_per_pixel[mode] + call_seconds;
    activation peak = batch x band pixels x activation_bytes_per_pixel[mode] + activation_fixed_bytes[mode]
    (both per batch row at dtype_bytes per element)."""

    name: str
    dtype_bytes: int
    attention_tflops: float
    dense_tflops: float
    seconds_per_pixel: dict[str, float]
    call_seconds: float
    activation_bytes_per_pixel: dict[str, float]
    activation_fixed_bytes: dict[str, float]
    activation_base_channels: int  # block_out_channels[0] of the UNet whose activations were measured
    activation_dtype_bytes: int  # the element size they were measured at
    vae: VaeCalibration | None
    sources: tuple[str, ...]
    fit: tuple[dict[str, Any], ...]  # the measurements and what the model predicts for them
    holdout: tuple[dict[str, Any], ...]  # the same for measurements left out of the fit
    memory_note: str = ""  # where the memory coefficients come from, when not from this device
    band_steps: tuple[dict[str, Any], ...] = ()  # ranks' bands timed alone (bench/band_compute.py)

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> DeviceCalibration:
        vae = data.get("vae")
        return cls(
            name=name,
            dtype_bytes=int(data["dtype_bytes"]),
            attention_tflops=float(data["attention_tflops"]),
            dense_tflops=float(data["dense_tflops"]),
            seconds_per_pixel={k: float(v) for k, v in data["seconds_per_pixel"].items()},
            call_seconds=float(data["call_seconds"]),
            activation_bytes_per_pixel={k: float(v) for k, v in data["activation_bytes_per_pixel"].items()},
            activation_fixed_bytes={k: float(v) for k, v in data["activation_fixed_bytes"].items()},
            activation_base_channels=int(data["activation_base_channels"]),
            activation_dtype_bytes=int(data.get("activation_dtype_bytes", data["dtype_bytes"])),
            vae=VaeCalibration(**vae) if vae else None,
            sources=tuple(data.get("sources", ())),
            fit=tuple(data.get("fit", ())),
            holdout=tuple(data.get("holdout", ())),
            memory_note=data.get("memory_note", ""),
            band_steps=tuple(data.get("band_steps", ())),
        )

    def measured_band_seconds(
        self,
        profile_key: str,
        latent: tuple[int, int],
        world: int,
        rank: int,
        mode: str,
        batch: int,
        dtype_bytes: int,
        freeu: bool,
    ) -> float | None:
        """Seconds of one dilated step of this rank's band when it was measured on this device, else None."""
        wanted = {"profile_key": profile_key, "latent": list(latent), "world": world, "rank": rank,
                  "mode": mode, "batch": batch, "dtype_bytes": dtype_bytes, "freeu": freeu}  # fmt: skip
        for measured in self.band_steps:
            if all(measured[key] == value for key, value in wanted.items()):
                return float(measured["measured_s"])
        return None


@lru_cache(maxsize=1)
def _calibration_data() -> dict[str, Any]:
    text = resources.files("freescale.planning").joinpath(CALIBRATION_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def device_names() -> list[str]:
    return sorted(_calibration_data()["devices"])


def device_calibration(name: str, strict: bool = True) -> DeviceCalibration:
    """The calibration of a device by the name torch reports ('NVIDIA H200', 'cpu'). A device measured
    under another name is matched by the aliases (the H100 has the H200's compute); with strict=False
    any other GPU gets the H200's (its memory estimates hold, its times are a guess)."""
    data = _calibration_data()
    devices = data["devices"]
    if name in devices:
        return DeviceCalibration.from_json(name, devices[name])
    for fragment, target in data.get("aliases", {}).items():
        if fragment.lower() in name.lower():
            return DeviceCalibration.from_json(target, devices[target])
    if not strict:
        return DeviceCalibration.from_json(data["default_gpu"], devices[data["default_gpu"]])
    raise ConfigError(f"no cost calibration for device {name!r}; calibrated: {', '.join(device_names())}")


def builtin_model_names() -> list[str]:
    """Models whose facts and UNet profile are stored: 'sdxl', 'sd15' and the tiny built-in models."""
    return list(_calibration_data()["models"])


def builtin_model(name: str) -> dict[str, Any]:
    """Stored facts of a built-in model ('tiny', 'sdxl', 'sd15' ...): native size, parameters, VAE tile."""
    return _calibration_data()["models"][name]


def builtin_profile(key: str) -> UNetProfile | None:
    """A stored UNet profile by architecture key (or by a built-in model's name: 'sdxl', 'sd15' ...)."""
    profiles = _calibration_data()["unet_profiles"]
    for name, data in profiles.items():
        if key in (name, data["key"]):
            return UNetProfile.from_json(data)
    return None
