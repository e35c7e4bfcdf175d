"""The application layer: what the commands do (where cells come from, where results go, running a suite, the UI),
so that :mod:`nonxfer_bench.cli` only parses."""
