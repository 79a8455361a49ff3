"""Rerunnable benchmarks whose output backs the figures the README quotes."""
