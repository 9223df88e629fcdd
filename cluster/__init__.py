"""Ray: the driver, workers, process groups and the sharded operators."""
