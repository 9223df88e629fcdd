"""Pure geometry on integers: stages, attention windows and their jitter, row bands, tiles."""
