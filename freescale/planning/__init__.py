"""Predicting a render without running it: FLOPs, bytes and memory per worker, the calibration, plan and
preflight."""
