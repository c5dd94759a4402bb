"""Benchmarks: each module prints numbers with the machine and a baseline
measured in the same run. Run one with ``python -m bench.<name>``."""
