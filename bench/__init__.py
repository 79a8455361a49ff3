"""Rerunnable benchmarks whose output backs the figures docs/benchmarks.md quotes."""
