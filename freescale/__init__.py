"""FreeScale: tuning-free high-resolution generation from pre-trained diffusion models."""
