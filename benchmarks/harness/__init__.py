"""The workloads' harness.

One process launcher and table (``workload``), one runner per kind of stack (``jax_runner``,
``torch_runner``), shared data pools and step timing (``common``) and the printed report
(``report``).
"""
