"""First-layer linear algebra: conv geometry, patch subspaces, the whole-operator spectrum, the bound math."""
