"""Benchmark scripts: run one with ``python -m benchmarks.<name>`` from the repo root.

``_timing`` holds the shared timing harness (interleaved rounds, medians and
paired ratios) and ``_table`` the table printer; the other modules are the
scripts, each with its usage in its docstring.
"""
