"""Foundations that import nothing internal: errors, hashing and keyed seeding, the typed cell, strict params, the
registry, caches, fault points."""
