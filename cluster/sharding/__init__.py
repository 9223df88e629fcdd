"""Exact row-band sharding on torch.distributed alone: the group, the shard context, band operators, the
CFG split."""
