"""Model families (SDXL, SD1.5, SD2.x), offline loading, and the built-in tiny models with their real
topologies."""
