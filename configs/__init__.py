"""YAML presets (2k, 4k, 8k, turbo, detail) and Ray cluster files, shipped as package data."""
