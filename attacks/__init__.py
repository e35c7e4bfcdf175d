"""Attack implementations, one module per family, registered in ``ATTACKS`` by decorator.

Installed, this folder is the package ``nonxfer_bench.attacks``. Third-party attacks register
through the entry-point group ``nonxfer_bench.attacks``.
"""

from nonxfer_bench.attacks.base import ATTACKS, Attack, AttackContext

__all__ = ["ATTACKS", "Attack", "AttackContext"]
