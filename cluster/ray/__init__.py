"""Ray: one session per command, the worker pool and its actors, process groups, the device probe, the
checkpoint queue."""
