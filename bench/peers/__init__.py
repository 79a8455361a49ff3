"""Baselines the benchmarks compare the platform with: not part of the platform."""
