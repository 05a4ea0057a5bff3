"""Benchmarks on public data sets under their published protocols (``forecast benchmark ...``)."""
