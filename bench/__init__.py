"""Benchmarks (not tests): quality sweeps and speed measurements."""
