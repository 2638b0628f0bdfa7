"""Benchmarks (never run as tests): `python -m bench.run` writes docs/performance.md."""
