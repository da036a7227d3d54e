"""Benchmarks: each prints a table of figures and writes them to ``bench/results/<name>.json``.

Run from the repository root, e.g. ``.venv/bin/python -m bench.run_all [--quick]``. They
measure and report against targets; they never assert timings. Each run works in its own
fresh database (``bench_<random>``) on the server DATABASE_URL names, or on the embedded
PostgreSQL when it is unset, and drops it at the end.
"""
