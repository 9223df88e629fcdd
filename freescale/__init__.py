"""FreeScale: tuning-free high-resolution generation from pre-trained diffusion models."""

import os

__version__ = "0.1.0"

# Never reach for a hub, and keep library chatter out of render logs (set before their import).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

_PUBLIC = {
    "render": "freescale.rendering.api",
    "RenderConfig": "freescale.config.render_config",
    "build_config": "freescale.config.render_config",
    "scale_fusion": "freescale.method.scale_fusion",
    "FreeScaleXLPipeline": "freescale.rendering.pipelines",
    "FreeScalePipeline": "freescale.rendering.pipelines",
}


def __getattr__(name: str):
    # Lazy, so that importing a light submodule (geometry, a worker) does not import diffusers' pipelines.
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'freescale' has no attribute {name!r}")


__all__ = [
    "FreeScalePipeline",
    "FreeScaleXLPipeline",
    "RenderConfig",
    "build_config",
    "render",
    "scale_fusion",
    "__version__",
]
