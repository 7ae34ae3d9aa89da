"""Benchmarks: measured figures written as JSON + markdown (docs/benchmarks.md quotes them)."""
