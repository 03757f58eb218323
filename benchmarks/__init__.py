"""Benchmarks and the demo for the adaptnn libraries (never imported by the packages)."""
