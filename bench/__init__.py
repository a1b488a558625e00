"""Benchmarks of teleconsult against bare baselines; see bench/README.md."""
