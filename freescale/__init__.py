"""FreeScale: tuning-free high-resolution generation from pre-trained diffusion models."""

import os

__version__ = "0.1.0"

# Never reach for a hub, and keep library chatter out of render logs (set before their import).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

from freescale.render import render  # noqa: E402
from freescale.render_config import RenderConfig, build_config  # noqa: E402
from freescale.scale_fusion import scale_fusion  # noqa: E402

__all__ = ["RenderConfig", "build_config", "render", "scale_fusion", "__version__"]
