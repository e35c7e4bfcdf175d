"""Planning and running a suite: the work graph, the runner stages, executors, the cell store, OOM back-off, sample
grids."""

# The --executor choices, importable without torch (the CLI builds its parser from them).
EXECUTOR_NAMES = ("local", "process", "ray")
