"""Numbers from cells: the results frame every output reads, intervals and paired tests, the protection ranking,
the adversary ladder, security curves and the theory statistics. No text, no files: :mod:`nonxfer_bench.rendering`
and :mod:`nonxfer_bench.tracking` turn these into leaderboards, plots and MLflow metrics."""
