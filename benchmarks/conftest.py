"""Benchmarks print their numbers (run with `make bench`); results go to docs/BENCHMARKS.md."""
