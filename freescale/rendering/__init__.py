"""The driver: a pool of ranks (in this process or on Ray), the one rank entry point, batches and
freescale.render."""
