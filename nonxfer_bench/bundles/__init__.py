"""Result bundles: a suite's results folder pinned by a manifest of hashes (:mod:`~nonxfer_bench.bundles.manifest`),
checked by anyone (:mod:`~nonxfer_bench.bundles.check`: hashes, tables re-derived from the outcome bits, a replayed
sample), and merged into one static leaderboard site (:mod:`~nonxfer_bench.bundles.site`). Pure functions over folders;
the commands are :mod:`nonxfer_bench.app.bundles`."""
