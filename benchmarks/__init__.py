"""Benchmarks of jflows: workloads W1-W3 side by side with peers, and one-off investigations.

Run from the repository root as modules, e.g. ``python -m benchmarks.workloads.w2_realnvp2d``
(``benchmarks/README.md``).
"""
