"""NE encoders, registered by name: clean, reference, gaussian, patch."""

from nonxfer_bench.encoders.base import ENCODERS, Encoder, Encoding

__all__ = ["ENCODERS", "Encoder", "Encoding"]
