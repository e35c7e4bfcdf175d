"""Protections for nonxfer-bench, registered through the entry point group ``nonxfer_bench.encoders``."""
