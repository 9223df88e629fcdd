"""Many ranks: exact sharding over torch.distributed (sharding/) and the Ray workers that run it (ray/)."""
