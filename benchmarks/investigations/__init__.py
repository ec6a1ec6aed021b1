"""One-off measurements behind figures in ``benchmarks/README.md`` (not workloads)."""
