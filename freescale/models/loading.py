"""Offline model loading: validates a model argument cheaply, then loads the built-in tiny model, a diffusers
SDXL directory or an original single-file SDXL checkpoint, never touching the network."""

import os

# Must be set before diffusers / transformers / huggingface_hub read them at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import hashlib  # noqa: E402
import json  # noqa: E402
import struct  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import diffusers.utils.logging as diffusers_logging  # noqa: E402
import torch  # noqa: E402
import transformers.utils.logging as transformers_logging  # noqa: E402
from diffusers import AutoencoderKL, StableDiffusionXLPipeline  # noqa: E402

from freescale.errors import ConfigError  # noqa: E402
from freescale.models.single_file_export import export_sdxl_single_file  # noqa: E402
from freescale.models.tiny_sdxl import build_tiny_pipeline  # noqa: E402

TINY_MODEL = "tiny"
TINY_SINGLE_FILE_NAME = "tiny_sdxl.safetensors"
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Headers of real checkpoints are a few hundred KB; anything near this is not a safetensors file.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_UNET_KEY_PREFIX = "model.diffusion_model."
_IDENTITY_SAMPLES = 16
_IDENTITY_SAMPLE_BYTES = 64 * 1024
_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "tiny" | "directory" | "single_file"
    path: str | None
    config_dir: str | None


@dataclass
class LoadedModel:
    pipe: StableDiffusionXLPipeline
    native_size: int
    identity: str
    device: torch.device
    dtype: torch.dtype


def _read_safetensors_header(path: str) -> tuple[bytes, dict[str, Any]]:
    """The raw header bytes (length prefix included) and the parsed header; reads nothing else."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ConfigError(f"model file {path!r} is not a valid safetensors file (shorter than 8 bytes)")
        (length,) = struct.unpack("<Q", prefix)
        if length < 2 or length > min(size - 8, _MAX_HEADER_BYTES):
            raise ConfigError(f"model file {path!r} is not a valid safetensors file (bad header length)")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"model file {path!r} is not a valid safetensors file (bad JSON header)") from None
    if not isinstance(header, dict):
        raise ConfigError(f"model file {path!r} is not a valid safetensors file (header is not an object)")
    return prefix + raw, header


def _require_model_index(directory: str, what: str) -> None:
    if not os.path.isfile(os.path.join(directory, "model_index.json")):
        raise ConfigError(
            f"{what} {directory!r} has no model_index.json; expected a diffusers SDXL pipeline directory"
        )


def resolve_model_source(model: str, model_config: str | None = None) -> ModelSource:
    """Checks the model argument without loading anything.

    `model` is "tiny", a diffusers SDXL directory (with model_index.json), or an original-layout SDXL
    .safetensors file. A file needs a diffusers config directory: `model_config`, else the file's own
    directory when that holds a model_index.json.
    """
    if model == TINY_MODEL:
        if model_config is not None:
            raise ConfigError(f"model_config {model_config!r} is only used with a .safetensors model file")
        return ModelSource(kind="tiny", path=None, config_dir=None)
    path = os.path.abspath(os.path.expanduser(model))
    if not os.path.exists(path):
        raise ConfigError(
            f"model {model!r} does not exist; use 'tiny', a diffusers SDXL directory or a .safetensors file"
        )
    if os.path.isdir(path):
        _require_model_index(path, "model directory")
        if model_config is not None:
            raise ConfigError(f"model_config {model_config!r} is only used with a .safetensors model file")
        return ModelSource(kind="directory", path=path, config_dir=None)
    if not path.endswith(".safetensors"):
        raise ConfigError(
            f"model file {model!r} is not a .safetensors file; only safetensors single-file checkpoints load"
        )
    _, header = _read_safetensors_header(path)
    if not any(key.startswith(_UNET_KEY_PREFIX) for key in header):
        raise ConfigError(
            f"model file {model!r} has no '{_UNET_KEY_PREFIX}*' tensors; expected an original-layout SDXL "
            "checkpoint (UNet, VAE and both text encoders in one file)"
        )
    if model_config is not None:
        config_dir = os.path.abspath(os.path.expanduser(model_config))
        if not os.path.isdir(config_dir):
            raise ConfigError(
                f"model_config {model_config!r} is not a directory; expected a diffusers SDXL directory"
            )
        _require_model_index(config_dir, "model_config")
    else:
        config_dir = os.path.dirname(path)
        if not os.path.isfile(os.path.join(config_dir, "model_index.json")):
            raise ConfigError(
                f"model file {model!r} needs a config directory: pass model_config (a diffusers SDXL "
                f"directory with model_index.json) or put one next to the file in {config_dir!r}"
            )
    return ModelSource(kind="single_file", path=path, config_dir=config_dir)


def native_size_from_configs(unet_config: Any, vae_config: Any) -> int:
    """Pixel size the model was trained at: latent sample_size times the VAE's downsampling factor."""
    vae_scale_factor = 2 ** (len(vae_config.block_out_channels) - 1)
    return int(unet_config.sample_size) * vae_scale_factor


def _resolve_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is not a torch device; use e.g. 'cpu' or 'cuda:0'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
    return resolved


def _resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not supported; use one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _weights_variant(directory: str) -> str | None:
    """'fp16' when a diffusers directory ships only fp16-variant UNet weights (common on the Hub)."""
    unet_dir = os.path.join(directory, "unet")
    if not os.path.isdir(unet_dir):
        return None
    names = os.listdir(unet_dir)
    has_plain = any(n.startswith("diffusion_pytorch_model") and ".fp16." not in n for n in names)
    has_fp16 = any(n.startswith("diffusion_pytorch_model.fp16") for n in names)
    return "fp16" if has_fp16 and not has_plain else None


def _vae_dtype(force_upcast: bool, dtype: torch.dtype) -> torch.dtype:
    # SDXL's VAE overflows in fp16 (force_upcast); keep it in fp32 rather than upcasting at every decode.
    return torch.float32 if dtype == torch.float16 and force_upcast else dtype


def _vae_dtype_from_config(config_dir: str, dtype: torch.dtype) -> torch.dtype:
    config = AutoencoderKL.load_config(config_dir, subfolder="vae", local_files_only=True)
    return _vae_dtype(bool(config.get("force_upcast", False)), dtype)


def _load_directory(path: str, dtype: torch.dtype) -> StableDiffusionXLPipeline:
    variant = _weights_variant(path)
    vae = AutoencoderKL.from_pretrained(
        path,
        subfolder="vae",
        dtype=_vae_dtype_from_config(path, dtype),
        local_files_only=True,
        variant=variant,
    )
    return StableDiffusionXLPipeline.from_pretrained(
        path, vae=vae, dtype=dtype, local_files_only=True, variant=variant, add_watermarker=False
    )


def _load_single_file(path: str, config_dir: str, dtype: torch.dtype) -> StableDiffusionXLPipeline:
    # With `config` a local directory, diffusers reads component configs, tokenizers and the scheduler from
    # it and converts all weights from the checkpoint; local_files_only keeps every other lookup offline.
    vae = AutoencoderKL.from_single_file(
        path,
        config=config_dir,
        subfolder="vae",
        dtype=_vae_dtype_from_config(config_dir, dtype),
        local_files_only=True,
    )
    return StableDiffusionXLPipeline.from_single_file(
        path, config=config_dir, vae=vae, dtype=dtype, local_files_only=True, add_watermarker=False
    )


@contextmanager
def _no_loading_progress_bars() -> Iterator[None]:
    """Silences the per-component loading bars of both libraries, restoring their previous setting."""
    libraries = (diffusers_logging, transformers_logging)
    before = [lib.is_progress_bar_enabled() for lib in libraries]
    for lib in libraries:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, enabled in zip(libraries, before, strict=True):
            if enabled:
                lib.enable_progress_bar()


def _single_file_identity(path: str) -> str:
    """Path plus a digest of the header and of evenly spaced samples of the tensor data.

    The header alone (names, shapes, dtypes, offsets) is identical for every fine-tune of one architecture,
    so samples of the weights are mixed in; reading ~1 MiB keeps this cheap for multi-GB checkpoints.
    """
    raw, _ = _read_safetensors_header(path)
    size = os.path.getsize(path)
    digest = hashlib.sha256(raw)
    data_start, data_size = len(raw), size - len(raw)
    with open(path, "rb") as f:
        for i in range(_IDENTITY_SAMPLES):
            f.seek(data_start + (max(data_size - _IDENTITY_SAMPLE_BYTES, 0) * i) // (_IDENTITY_SAMPLES - 1))
            digest.update(f.read(_IDENTITY_SAMPLE_BYTES))
    return f"single_file:{path} (sampled sha256 {digest.hexdigest()[:16]}, {size} bytes)"


def load_model(source: ModelSource, device: str | None = None, dtype: str | None = None) -> LoadedModel:
    """Loads the pipeline onto `device` in `dtype` (default: fp16 on CUDA, fp32 on CPU), in eval mode."""
    torch_device = _resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, torch_device)
    if source.kind == "tiny":
        pipe = build_tiny_pipeline(0)
        for name in _COMPONENTS:
            module = getattr(pipe, name)
            wanted = _vae_dtype(module.config.force_upcast, torch_dtype) if name == "vae" else torch_dtype
            if module.dtype != wanted:
                module.to(wanted)
        identity = "tiny(seed=0)"
    elif source.kind == "directory" and source.path is not None:
        with _no_loading_progress_bars():
            pipe = _load_directory(source.path, torch_dtype)
        identity = f"directory:{source.path}"
    elif source.kind == "single_file" and source.path is not None and source.config_dir is not None:
        with _no_loading_progress_bars():
            pipe = _load_single_file(source.path, source.config_dir, torch_dtype)
        identity = _single_file_identity(source.path)
    else:
        raise ConfigError(f"model source {source!r} is not valid; build it with resolve_model_source")
    pipe.to(torch_device)
    for name in _COMPONENTS:
        getattr(pipe, name).eval()
    pipe.set_progress_bar_config(disable=True)
    return LoadedModel(
        pipe=pipe,
        native_size=native_size_from_configs(pipe.unet.config, pipe.vae.config),
        identity=identity,
        device=torch_device,
        dtype=torch_dtype,
    )


def save_tiny_model(directory: str, seed: int = 0, single_file: bool = False) -> None:
    """Saves the tiny pipeline in diffusers layout (safetensors); with `single_file`, also writes
    <directory>/tiny_sdxl.safetensors in the original SDXL layout, loadable with the directory as config."""
    pipe = build_tiny_pipeline(seed)
    os.makedirs(directory, exist_ok=True)
    with _no_loading_progress_bars():
        pipe.save_pretrained(directory, safe_serialization=True)
    if single_file:
        export_sdxl_single_file(pipe, os.path.join(directory, TINY_SINGLE_FILE_NAME))
