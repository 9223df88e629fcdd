"""Offline model loading: validates a model argument cheaply, then loads a built-in tiny model, a diffusers
pipeline directory or an original single-file checkpoint of a supported family (SDXL, SD1.x, SD2.x),
never touching the network."""

import os

# Must be set before diffusers / transformers / huggingface_hub read them at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import hashlib  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import diffusers.utils.logging as diffusers_logging  # noqa: E402
import torch  # noqa: E402
import transformers.utils.logging as transformers_logging  # noqa: E402
from diffusers import AutoencoderKL, StableDiffusionPipeline, StableDiffusionXLPipeline  # noqa: E402

from freescale.errors import ConfigError  # noqa: E402
from freescale.models.families import BUILTIN_MODELS, ModelFamily, family_named, family_of_source  # noqa: E402
from freescale.models.model_source import MODEL_COMPONENTS, ModelSource, resolve_model_source  # noqa: E402
from freescale.models.motion_adapter import MOTION_ADAPTER_DIR, save_tiny_motion_adapter  # noqa: E402
from freescale.models.native_resolution import native_size_from_configs, vae_force_upcast  # noqa: E402
from freescale.models.safetensors_header import read_safetensors_header  # noqa: E402
from freescale.models.sd15_single_file_export import export_sd15_single_file  # noqa: E402
from freescale.models.single_file_export import export_sdxl_single_file  # noqa: E402
from freescale.models.tiny_sd15 import build_tiny_sd15_pipeline  # noqa: E402
from freescale.models.tiny_sdxl import build_tiny_pipeline  # noqa: E402

# ModelSource and resolve_model_source live in model_source (no heavy imports) and are re-exported here.
__all__ = [
    "TINY_MODEL",
    "TINY_SINGLE_FILE_NAME",
    "LoadedModel",
    "ModelSource",
    "load_model",
    "native_size_from_configs",
    "resolve_model_source",
    "save_tiny_model",
    "single_file_name",
]

TINY_MODEL = "tiny"
TINY_SINGLE_FILE_NAME = "tiny_sdxl.safetensors"
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_IDENTITY_SAMPLES = 16
_IDENTITY_SAMPLE_BYTES = 64 * 1024
# The networks a pipeline may hold; SD1.x / SD2.x have no text_encoder_2.
_COMPONENTS = MODEL_COMPONENTS
Pipeline = StableDiffusionXLPipeline | StableDiffusionPipeline
# A family's pipeline class name -> (class, loading options): no watermarker (SDXL), no safety checker
# (SD1.x / SD2.x: it would need weights of its own and changes no latent).
_PIPELINES: dict[str, tuple[type, dict[str, Any]]] = {
    "StableDiffusionXLPipeline": (StableDiffusionXLPipeline, {"add_watermarker": False}),
    "StableDiffusionPipeline": (
        StableDiffusionPipeline,
        {"safety_checker": None, "requires_safety_checker": False},
    ),
}
# Built-in model name -> its builder (seed -> pipeline with random fp32 weights).
_BUILTIN_BUILDERS: dict[str, Callable[[int], Any]] = {
    "tiny": build_tiny_pipeline,
    "tiny-sd15": build_tiny_sd15_pipeline,
}
_SINGLE_FILE_EXPORTERS: dict[str, Callable[[Any, str], None]] = {
    "sdxl": export_sdxl_single_file,
    "sd15": export_sd15_single_file,
}


@dataclass
class LoadedModel:
    pipe: Pipeline
    native_size: int
    identity: str
    device: torch.device
    dtype: torch.dtype
    family: ModelFamily = BUILTIN_MODELS[TINY_MODEL]


def _components(pipe: Pipeline) -> list[tuple[str, torch.nn.Module]]:
    return [(name, getattr(pipe, name)) for name in _COMPONENTS if getattr(pipe, name, None) is not None]


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
    return _vae_dtype(vae_force_upcast(config), dtype)


def _pipeline_class_and_options(family: ModelFamily) -> tuple[type, dict[str, Any]]:
    """The family's diffusers pipeline and the options that keep it lean."""
    return _PIPELINES[family.pipeline_class]


def _use_safetensors(allow_pickle: bool) -> bool | None:
    """diffusers' `use_safetensors`: True loads safetensors only; None (--allow-pickle) prefers them and
    falls back to pickles."""
    return None if allow_pickle else True


def _load_directory(path: str, family: ModelFamily, dtype: torch.dtype, allow_pickle: bool) -> Pipeline:
    variant = _weights_variant(path)
    safetensors = _use_safetensors(allow_pickle)
    vae = AutoencoderKL.from_pretrained(
        path,
        subfolder="vae",
        dtype=_vae_dtype_from_config(path, dtype),
        local_files_only=True,
        variant=variant,
        use_safetensors=safetensors,
    )
    pipeline, options = _pipeline_class_and_options(family)
    return pipeline.from_pretrained(
        path, vae=vae, dtype=dtype, local_files_only=True, variant=variant, use_safetensors=safetensors,
        **options,
    )  # fmt: skip


def _load_single_file(path: str, config_dir: str, family: ModelFamily, dtype: torch.dtype) -> Pipeline:
    # With `config` a local directory, diffusers reads component configs, tokenizers and the scheduler from
    # it and converts all weights from the checkpoint; local_files_only keeps every other lookup offline.
    # The file's format is its suffix: resolve_model_source lets a pickle through only with --allow-pickle
    # (and diffusers unpickles it with weights_only).
    vae = AutoencoderKL.from_single_file(
        path,
        config=config_dir,
        subfolder="vae",
        dtype=_vae_dtype_from_config(config_dir, dtype),
        local_files_only=True,
    )
    pipeline, options = _pipeline_class_and_options(family)
    return pipeline.from_single_file(
        path, config=config_dir, vae=vae, dtype=dtype, local_files_only=True, **options
    )


def builtin_pipeline(name: str) -> Pipeline:
    """A built-in model's pipeline in fp32 on the CPU, as its builder makes it (for its configs)."""
    return _BUILTIN_BUILDERS[name](0)


def _build_builtin(name: str, dtype: torch.dtype) -> Pipeline:
    pipe = _BUILTIN_BUILDERS[name](0)
    for component, module in _components(pipe):
        wanted = _vae_dtype(vae_force_upcast(module.config), dtype) if component == "vae" else dtype
        if module.dtype != wanted:
            module.to(wanted)
    return pipe


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
    raw = read_safetensors_header(path)[0] if path.endswith(".safetensors") else b""
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
    family = family_of_source(source)
    if source.kind == "tiny":
        pipe = _build_builtin(source.builtin_name, torch_dtype)
        identity = f"{source.builtin_name}(seed=0)"
    elif source.kind == "directory" and source.path is not None:
        with _no_loading_progress_bars():
            pipe = _load_directory(source.path, family, torch_dtype, source.allow_pickle)
        identity = f"directory:{source.path}"
    elif source.kind == "single_file" and source.path is not None and source.config_dir is not None:
        with _no_loading_progress_bars():
            pipe = _load_single_file(source.path, source.config_dir, family, torch_dtype)
        identity = _single_file_identity(source.path)
    else:
        raise ConfigError(f"model source {source!r} is not valid; build it with resolve_model_source")
    pipe.to(torch_device)
    if source.lora:  # fused here, at load time: before the UNet is ever sharded or patched
        from freescale.models.lora_fusing import fuse_loras, lora_identity

        fuse_loras(pipe, source.lora)
        identity = lora_identity(identity, source.lora)
    for _, module in _components(pipe):
        module.eval()
    pipe.set_progress_bar_config(disable=True)
    return LoadedModel(
        pipe=pipe,
        native_size=native_size_from_configs(pipe.unet.config, pipe.vae.config),
        identity=identity,
        device=torch_device,
        dtype=torch_dtype,
        family=family,
    )


def single_file_name(family: str) -> str:
    """The name save_tiny_model gives the original-layout file of the family's tiny model."""
    return f"tiny_{family}.safetensors"


def save_tiny_model(
    directory: str, seed: int = 0, single_file: bool = False, family: str = "sdxl", motion: bool = False
) -> None:
    """Saves the family's tiny pipeline in diffusers layout (safetensors); with `single_file`, also writes
    <directory>/tiny_<family>.safetensors in the original layout, loadable with the directory as config;
    with `motion`, also the family's tiny motion adapter (diffusers layout) in <directory>/motion_adapter."""
    chosen = family_named(family)
    if chosen.builtin_model is None or chosen.name not in _SINGLE_FILE_EXPORTERS:
        allowed = ", ".join(_SINGLE_FILE_EXPORTERS)
        raise ConfigError(f"family {family!r} has no built-in tiny model; use one of {allowed}")
    pipe = _BUILTIN_BUILDERS[chosen.builtin_model](seed)
    os.makedirs(directory, exist_ok=True)
    with _no_loading_progress_bars():
        pipe.save_pretrained(directory, safe_serialization=True)
    if single_file:
        _SINGLE_FILE_EXPORTERS[chosen.name](pipe, os.path.join(directory, single_file_name(chosen.name)))
    if motion:
        save_tiny_motion_adapter(os.path.join(directory, MOTION_ADAPTER_DIR), chosen.name, seed)
