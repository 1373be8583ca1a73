"""Benchmarks behind ``python -m service bench``."""
