"""nonxfer-bench: an adversarial-robustness benchmark for non-transferable examples (NEs)."""

__version__ = "0.1.0"
