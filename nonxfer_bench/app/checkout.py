"""Whether the package runs with its own ``attacks``: checked by every command before it imports any component."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nonxfer_bench


def attacks_origin_problem() -> str | None:
    """Run from a checkout (``PYTHONPATH=.``), ``nonxfer_bench`` comes from the checkout but its ``attacks``
    from wherever the package was installed, or from nowhere: say so instead of running other code."""
    checkout = Path(nonxfer_bench.__file__).resolve().parents[1] / "attacks"
    if not ((checkout / "__init__.py").is_file() and (checkout.parent / "pyproject.toml").is_file()):
        return None  # an installed package: attacks/ is inside it
    spec = importlib.util.find_spec("nonxfer_bench.attacks")
    where = Path(spec.origin).resolve().parent if spec and spec.origin else None
    if where == checkout:
        return None
    found = f"from {where}" if where else "nowhere"
    return (
        f"nonxfer_bench is imported from {checkout.parent} but nonxfer_bench.attacks {found}; install this checkout "
        "with `pip install -e .`"
    )
