"""Leaderboards (Markdown sections and cells.csv), plots and the HTML report, from the results frame
(:mod:`nonxfer_bench.analysis`)."""
